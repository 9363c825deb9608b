// Lint rules that catch real bugs (not style): a promise nobody awaits or catches
// (a rejection that escapes every handler), a promise passed where a callback's result is
// ignored, awaiting a non-promise, throwing non-Errors, unused results of pure expressions.
// Type-aware (typescript-eslint with the project's tsconfig). Run by `npm test` via `npm run lint`.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'test/fixtures/**', '**/*.js', '**/*.mjs', '**/*.cjs'] },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // tap's t.test()/t.rejects() return promises that tap itself awaits in order.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', name: 'test', package: '@tapjs/core' },
            { from: 'package', name: 'rejects', package: '@tapjs/core' },
            { from: 'package', name: 'resolves', package: '@tapjs/core' },
            { from: 'package', name: 'resolveMatch', package: '@tapjs/core' },
            { from: 'package', name: 'test', package: '@tapjs/test' },
            { from: 'package', name: 'rejects', package: '@tapjs/test' },
            { from: 'package', name: 'resolves', package: '@tapjs/test' },
            { from: 'package', name: 'resolveMatch', package: '@tapjs/test' },
            { from: 'package', name: 'test', package: 'tap' },
            { from: 'package', name: 'rejects', package: 'tap' },
            { from: 'package', name: 'resolves', package: 'tap' },
            { from: 'package', name: 'resolveMatch', package: 'tap' },
            { from: 'package', name: 'test', package: '@tapjs/asserts' },
            { from: 'package', name: 'rejects', package: '@tapjs/asserts' },
            { from: 'package', name: 'resolves', package: '@tapjs/asserts' },
            { from: 'package', name: 'resolveMatch', package: '@tapjs/asserts' },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false, attributes: false } }],
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/no-unused-expressions': 'error',
      '@typescript-eslint/require-await': 'off',
      'no-fallthrough': 'error',
      'no-self-assign': 'error',
      'no-unsafe-finally': 'error',
      'no-dupe-keys': 'error',
      'no-unreachable': 'error',
      'use-isnan': 'error',
      'valid-typeof': 'error',
    },
  },
);
