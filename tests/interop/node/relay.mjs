// A relay worker on the official Node SDK, for test_sdk_telemetry.py:
// `III_URL=ws://... node relay.mjs FUNCTION_ID [NEXT_ID]`.
//
// Registers FUNCTION_ID, whose handler logs a line with the official Logger and, given NEXT_ID, calls it; it
// answers {"via": [FUNCTION_ID, ...the next one's via]}. Asks the engine (engine::functions::list) until the
// function is listed, prints `READY {}`, serves until stdin closes. The SDK records its spans and sends them and
// the log lines to the engine's /otel on its own.

import { registerWorker } from 'iii-sdk'
import { Logger } from '@iii-dev/helpers/observability'

const MAX_LIST_ATTEMPTS = 200

async function main() {
  const [functionId, nextId] = process.argv.slice(2)
  const iii = registerWorker(process.env.III_URL, { workerName: `relay-node-${process.pid}` })
  const logger = new Logger(undefined, 'relay-node')
  iii.registerFunction(functionId, async (data) => {
    logger.info(`relaying in ${functionId}`)
    if (!nextId) return { via: [functionId] }
    const answer = await iii.trigger({ function_id: nextId, payload: data })
    return { via: [functionId, ...answer.via] }
  })
  let listed = false
  for (let attempt = 0; attempt < MAX_LIST_ATTEMPTS && !listed; attempt++) {
    const answer = await iii.trigger({ function_id: 'engine::functions::list', payload: {} })
    listed = answer.functions.some((entry) => entry.function_id === functionId)
  }
  if (!listed) {
    console.log(`FATAL ${functionId} never listed`)
    process.exit(1)
  }
  console.log('READY {}')
  process.stdin.resume()
  process.stdin.on('end', async () => {
    await iii.shutdown()
    process.exit(0)
  })
}

main().catch((err) => {
  console.log(`FATAL ${String(err && err.stack ? err.stack : err)}`)
  process.exit(1)
})
