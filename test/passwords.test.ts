/** The example's password hashing: scrypt with a salt per password, checked in constant time. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { hashPassword, verifyPassword } from '../example/passwords.js'

test('a hash verifies its password only, and the same password hashes differently each time (its own salt)', async () => {
  const [first, second] = await Promise.all([hashPassword('correct horse'), hashPassword('correct horse')])
  assert.match(first, /^scrypt\$16384\$8\$1\$[\w-]{22}\$[\w-]{43}$/)
  assert.notEqual(first, second)
  assert.equal(await verifyPassword('correct horse', first), true)
  assert.equal(await verifyPassword('correct horse', second), true)
  assert.equal(await verifyPassword('correct hors', first), false)
  assert.equal(await verifyPassword('Correct horse', first), false)
  assert.ok(!first.includes('correct horse'))
})

test('a password compares in Unicode NFC, so the same text typed differently still signs in', async () => {
  const stored = await hashPassword('cafe\u0301 au lait')
  assert.equal(await verifyPassword('caf\u00e9 au lait', stored), true)
})

test('a stored value that is not one of our hashes verifies nothing', async () => {
  for (const stored of ['', 'plain text', 'bcrypt$x$y$z$a$b', 'scrypt$16384$8$1$c2FsdA']) {
    assert.equal(await verifyPassword('anything', stored), false, stored)
  }
})
