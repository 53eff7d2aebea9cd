// The vitest configuration that runs the official Node SDK's own tests (from the iii repository, release
// iii/v0.22.1, extracted to <suite>/tests) against the npm package iii-sdk@0.22.1 installed next to this file.
// The tests import the SDK from its sources (`../src/index`, ...); the published package serves those imports
// instead. Used by tests/interop/test_official_node_suite.py, which picks the test files and the engine.
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const here = path.dirname(fileURLToPath(import.meta.url))
const published = (file) => path.resolve(here, 'node_modules', 'iii-sdk', 'dist', file)

export default defineConfig({
  resolve: {
    alias: [
      { find: /^\.\.\/src\/index$/, replacement: published('index.mjs') },
      { find: /^\.\.\/src\/helpers$/, replacement: published('helpers.mjs') },
      { find: /^\.\.\/src\/state$/, replacement: published('state.mjs') },
    ],
  },
  test: {
    globals: true,
    testTimeout: 30000,
    hookTimeout: 60000,
    setupFiles: [path.resolve(here, 'suite', 'tests', 'setup.ts')],
    include: ['suite/tests/**/*.test.ts'],
  },
})
