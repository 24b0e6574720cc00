import { MemoryBroker } from '../lib/brokers/memory.js'
import { brokerContract } from './broker-contract.js'

brokerContract('MemoryBroker', (t) => {
  const broker = new MemoryBroker()
  t.after(() => broker.close())
  return broker
})
