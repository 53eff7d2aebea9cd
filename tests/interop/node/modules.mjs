// A worker on the official Node SDK that binds functions to the engine modules' trigger types and calls
// functions on request, for tests/interop/test_official_modules.py: `node modules.mjs PLAN_JSON`.
//
// PLAN_JSON is {"worker_name", "bindings": [{"function_id", "type", "config"}, ...]}: for each binding it
// registers the function (once per id) with the official `registerFunction` and binds it with the official
// `registerTrigger`. It asks the engine (engine::registered-triggers::list) until every binding is active and,
// where the engine tells, its topic heard, then prints `READY {"registered_triggers": [...]}`.
//
// Then, until its stdin closes:
// - every call of a bound function prints `EVENT {"function_id", "data", ...}`, with what the official SDK
//   makes of the payload: `event_type` (the name of the official `StateEventType` member, from
//   `iii-sdk/state`) for a state event, and `times_ms` (epoch milliseconds, `Date.parse`) for the payload's
//   `*_time` fields;
// - every stdin line {"id", "function_id", "payload", "queue"?} is a call made with the official `trigger` (with
//   `action: TriggerAction.Enqueue({ queue })` when the line names a queue); it prints
//   `RESULT {"id", "ok": true, "kind": "value" | "null" | "undefined", "result"}` or
//   `RESULT {"id", "ok": false, "error": {"code", "message"}}`.
// Anything unexpected prints `FATAL ...` and exits 1.

import { createInterface } from 'node:readline'
import { registerWorker, TriggerAction } from 'iii-sdk'
import { StateEventType } from 'iii-sdk/state'

const MAX_LIST_ATTEMPTS = 200

function fatal(message, err) {
  console.log(`FATAL ${message}: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
}

const say = (prefix, record) => console.log(`${prefix} ${JSON.stringify(record)}`)

function describe(functionId, data) {
  const record = { function_id: functionId, data }
  if (data && typeof data === 'object' && !Array.isArray(data)) {
    if (data.type === 'state') {
      record.event_type = Object.keys(StateEventType).find((name) => StateEventType[name] === data.event_type) ?? null
    }
    const times = Object.entries(data).filter(([name, value]) => name.endsWith('_time') && typeof value === 'string')
    if (times.length > 0) record.times_ms = Object.fromEntries(times.map(([name, value]) => [name, Date.parse(value)]))
  }
  return record
}

function kindOf(result) {
  if (result === undefined) return 'undefined'
  return result === null ? 'null' : 'value'
}

async function main() {
  const url = process.env.III_URL
  if (!url || process.argv.length !== 3) fatal('usage', 'III_URL=ws://... node modules.mjs PLAN_JSON')
  const plan = JSON.parse(process.argv[2])
  const iii = registerWorker(url, { workerName: plan.worker_name })

  const functionIds = [...new Set(plan.bindings.map((binding) => binding.function_id))].sort()
  for (const functionId of functionIds) {
    iii.registerFunction(functionId, async (data) => {
      say('EVENT', describe(functionId, data))
      return {}
    })
  }
  for (const { type, function_id, config } of plan.bindings) iii.registerTrigger({ type, function_id, config })

  let rows = []
  let ready = false
  for (let attempt = 0; attempt < MAX_LIST_ATTEMPTS && !ready; attempt++) {
    const listed = await iii.trigger({ function_id: 'engine::registered-triggers::list', payload: {}, timeoutMs: 10000 })
    rows = listed.registered_triggers.filter((row) => functionIds.includes(row.function_id))
    const heard = rows.every((row) => row.details?.subscribed ?? true)
    ready = rows.length === plan.bindings.length && rows.every((row) => row.status === 'active') && heard
  }
  if (!ready) fatal('bindings not active', JSON.stringify(rows))
  say('READY', { registered_triggers: rows })

  // Calls run one at a time, in the order they arrive.
  let calls = Promise.resolve()
  const lines = createInterface({ input: process.stdin })
  lines.on('line', (line) => {
    const command = JSON.parse(line)
    calls = calls.then(async () => {
      try {
        const request = { function_id: command.function_id, payload: command.payload, timeoutMs: 30000 }
        if (command.queue !== undefined) request.action = TriggerAction.Enqueue({ queue: command.queue })
        const result = await iii.trigger(request)
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
