// Runs before `npm run build`. The build is incremental, and `tsc -b` trusts its build info without looking
// for the outputs: after part of dist/ was deleted it would build nothing. So when any source's output is
// missing, the build info is dropped here and tsc builds everything again.
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs'

const config = (file) => JSON.parse(readFileSync(file, 'utf8'))
const { include, compilerOptions: { outDir } } = config('tsconfig.json')
const { tsBuildInfoFile } = config('tsconfig.build.json').compilerOptions

const missing = include.filter((dir) => existsSync(dir)).some((dir) => readdirSync(dir, { recursive: true })
  .filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))
  .some((file) => !existsSync(`${outDir}/${dir}/${file.slice(0, -3)}.js`)))
if (missing) rmSync(tsBuildInfoFile, { force: true })
