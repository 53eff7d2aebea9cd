// A worker on the official Node SDK that uses the engine's streams, for tests/interop/test_official_node_streams.py:
// `node streams.mjs PLAN_JSON`.
//
// PLAN_JSON is {"worker_name", "url_env"?, "headers"?, "bindings": [{"function_id", "config"}, ...],
// "custom_streams": [name, ...]}. It connects to the URL in the environment variable `url_env` (default III_URL)
// with the official `registerWorker` (sending `headers`, as a page of the browser SDK sends its credentials to
// the RBAC listener), then:
// - for each binding registers the function (once per id) with the official `registerFunction` and binds it to
//   the `stream` trigger type with the official `registerTrigger`; every call of it prints
//   `EVENT {"function_id", "data"}`; with `"hold_first": true` its first call answers only once the stdin line
//   {"release": true} comes (a page slow to take a change);
// - for each custom stream name registers an in-memory stream with the official `createStream` (from
//   `iii-sdk/helpers`); every call of one of its methods prints `CUSTOM {"stream", "op", "input"}`.
// Then it prints `READY {}` (the test waits, on its own connection, until the engine has the registrations).
//
// Until its stdin closes, every other stdin line {"id", "function_id", "payload"} is a call made with the official
// `trigger`; it prints `RESULT {"id", "ok": true, "kind": "value" | "null" | "undefined", "result"}` or
// `RESULT {"id", "ok": false, "error": {"code", "message"}}`. Anything unexpected prints `FATAL ...` and exits 1.

import { createInterface } from 'node:readline'
import { registerWorker } from 'iii-sdk'
import { createStream } from 'iii-sdk/helpers'

function fatal(message, err) {
  console.log(`FATAL ${message}: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
}

const say = (prefix, record) => console.log(`${prefix} ${JSON.stringify(record)}`)

function kindOf(result) {
  if (result === undefined) return 'undefined'
  return result === null ? 'null' : 'value'
}

// An IStream keeping its items in a Map keyed by group and item id.
function memoryStream(name) {
  const items = new Map()
  const key = (input) => JSON.stringify([input.group_id, input.item_id])
  const told = (op, input) => say('CUSTOM', { stream: name, op, input })
  return {
    async get(input) {
      told('get', input)
      return items.get(key(input)) ?? null
    },
    async set(input) {
      told('set', input)
      const old = items.get(key(input)) ?? null
      items.set(key(input), input.data)
      return { old_value: old, new_value: input.data }
    },
    async delete(input) {
      told('delete', input)
      const old = items.get(key(input)) ?? null
      items.delete(key(input))
      return { old_value: old }
    },
    async list(input) {
      told('list', input)
      return [...items.entries()]
        .filter(([itemKey]) => JSON.parse(itemKey)[0] === input.group_id)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([, value]) => value)
    },
    async listGroups(input) {
      told('list_groups', input)
      return [...new Set([...items.keys()].map((itemKey) => JSON.parse(itemKey)[0]))].sort()
    },
    async update(input) {
      told('update', input)
      throw new Error('update is not wired by createStream')
    },
  }
}

async function main() {
  if (process.argv.length !== 3) fatal('usage', 'III_URL=ws://... node streams.mjs PLAN_JSON')
  const plan = JSON.parse(process.argv[2])
  const url = process.env[plan.url_env ?? 'III_URL']
  if (!url) fatal('usage', `${plan.url_env ?? 'III_URL'} is not set`)
  const iii = registerWorker(url, { workerName: plan.worker_name, headers: plan.headers ?? {} })

  let release
  const released = new Promise((resolve) => {
    release = resolve
  })
  const bindings = plan.bindings ?? []
  for (const functionId of new Set(bindings.map((binding) => binding.function_id))) {
    const hold = bindings.some((binding) => binding.function_id === functionId && binding.hold_first)
    let calls = 0
    iii.registerFunction(functionId, async (data) => {
      say('EVENT', { function_id: functionId, data })
      if (hold && calls++ === 0) await released
      return {}
    })
  }
  for (const { function_id, config } of bindings) iii.registerTrigger({ type: 'stream', function_id, config })
  for (const name of plan.custom_streams ?? []) createStream(iii, name, memoryStream(name))
  say('READY', {})

  // Calls run one at a time, in the order they arrive.
  let calls = Promise.resolve()
  const lines = createInterface({ input: process.stdin })
  lines.on('line', (line) => {
    const command = JSON.parse(line)
    if (command.release) {
      release()
      return
    }
    calls = calls.then(async () => {
      try {
        const result = await iii.trigger({ function_id: command.function_id, payload: command.payload, timeoutMs: 30000 })
        say('RESULT', { id: command.id, ok: true, kind: kindOf(result), result: result ?? null })
      } catch (err) {
        say('RESULT', { id: command.id, ok: false, error: { code: err.code, message: err.message } })
      }
    })
  })
  lines.on('close', async () => {
    await calls
    try {
      await iii.shutdown()
    } finally {
      process.exit(0)
    }
  })
}

process.on('unhandledRejection', (err) => fatal('unhandled rejection', err))
main().catch((err) => fatal('worker failed', err))
