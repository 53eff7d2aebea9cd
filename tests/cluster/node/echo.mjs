// The official Node SDK (npm iii-sdk@0.22.1) serving one function on one engine of a cluster:
// `III_URL=ws://... node echo.mjs FUNCTION_ID` registers FUNCTION_ID (it answers {echo: input, sdk: 'official-node'}),
// asks its engine (engine::functions::list) until it is listed, prints `READY {}`, and serves until its stdin
// closes; then it shuts the client down and exits 0. Anything unexpected prints `FATAL ...` and exits 1.

import { registerWorker } from 'iii-sdk'

const MAX_LIST_ATTEMPTS = 200

function fatal(message, err) {
  console.log(`FATAL ${message}: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
}

async function main() {
  const url = process.env.III_URL
  const [functionId] = process.argv.slice(2)
  if (!url || !functionId) fatal('usage', 'III_URL=ws://... node echo.mjs FUNCTION_ID')
  const iii = registerWorker(url, { workerName: `cluster-node-${process.pid}` })
  iii.registerFunction(functionId, async (input) => ({ echo: input, sdk: 'official-node' }))
  let listed = false
  for (let attempt = 0; !listed && attempt < MAX_LIST_ATTEMPTS; attempt++) {
    const answer = await iii.trigger({ function_id: 'engine::functions::list', payload: {}, timeoutMs: 10000 })
    listed = answer.functions.some((entry) => entry.function_id === functionId)
  }
  if (!listed) fatal('not listed by the engine', functionId)
  console.log('READY {}')

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
