// Lint: ESLint's and typescript-eslint's recommended rules over the sources; the build output is not linted.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

const browserGlobals = Object.fromEntries(
  ['window', 'document', 'localStorage', 'location', 'fetch', 'setTimeout', 'clearTimeout', 'Intl', 'URL', 'URLSearchParams'].map((name) => [name, 'readonly']),
)

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  { files: ['public/**/*.js'], languageOptions: { globals: browserGlobals } },
)
