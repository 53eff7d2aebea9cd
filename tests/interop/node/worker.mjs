// A Node worker on the official SDK: `node worker.mjs ROLE...` (roles are defined in roles.mjs).
//
// Connects to $III_URL (with $III_TOKEN as a bearer token when set), registers the roles' functions,
// then asks the engine (engine::functions::list) until every one of them is listed, and prints one line
// `READY {"functions": [...]}` with the engine's entries for them (so the test can see which worker owns
// what). The SDK replays registrations before any queued call once the socket opens, so the first answer
// normally lists them already; the bounded loop waits only on the engine's answers, never on a timer.
//
// The process ends when its stdin closes (the test closes it): it shuts the client down and exits 0.
// Anything unexpected prints `FATAL ...` and exits 1.

import { registerWorker } from 'iii-sdk'
import { tokenHeaders } from './token.mjs'
import { roles } from './roles.mjs'

const MAX_LIST_ATTEMPTS = 200

function fatal(message, err) {
  console.log(`FATAL ${message}: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
}

async function main() {
  const url = process.env.III_URL
  const names = process.argv.slice(2)
  if (!url || names.length === 0) fatal('usage', 'III_URL=ws://... node worker.mjs ROLE...')
  const unknown = names.filter((name) => !(name in roles))
  if (unknown.length > 0) fatal('unknown roles', unknown.join(', '))

  const iii = registerWorker(url, { workerName: `interop-node-${names.join('+')}-${process.pid}`, headers: tokenHeaders() })
  const ids = names.flatMap((name) => roles[name](iii)).map((ref) => ref.id)

  let entries = []
  let attempts = 0
  while (entries.length !== ids.length && attempts < MAX_LIST_ATTEMPTS) {
    attempts++
    const listed = await iii.trigger({ function_id: 'engine::functions::list', payload: {}, timeoutMs: 10000 })
    entries = listed.functions.filter((entry) => ids.includes(entry.function_id))
  }
  if (entries.length !== ids.length) fatal('registration not visible', JSON.stringify({ ids, entries }))
  console.log(`READY ${JSON.stringify({ functions: entries, list_attempts: attempts })}`)

  process.stdin.on('data', () => {})
  process.stdin.on('end', async () => {
    try {
      await iii.shutdown()
    } finally {
      process.exit(0)
    }
  })
}

process.on('unhandledRejection', (err) => fatal('unhandled rejection', err))
main().catch((err) => fatal('worker failed', err))
