// A worker on the official Node SDK whose handler logs with the SDK's Logger, for test_observability.py:
// `III_URL=ws://... node telemetry.mjs FUNCTION_ID MARKER`.
//
// Registers FUNCTION_ID, whose handler logs MARKER with the official Logger (inside the span the SDK opens for
// the call), calls it once through the engine, prints `CALLED {"result"}` and waits for stdin to close. The SDK
// sends its logs and spans to the engine's /otel on its own.

import { registerWorker } from 'iii-sdk'
import { Logger } from '@iii-dev/helpers/observability'

async function main() {
  const [functionId, marker] = process.argv.slice(2)
  const iii = registerWorker(process.env.III_URL, { workerName: 'telemetry-node' })
  const logger = new Logger(undefined, 'telemetry-node')
  iii.registerFunction(functionId, async (data) => {
    logger.info(marker, { input: data })
    return { logged: marker }
  })
  const result = await iii.trigger({ function_id: functionId, payload: { n: 1 } })
  console.log(`CALLED ${JSON.stringify({ result })}`)
  process.stdin.resume()
  process.stdin.on('end', async () => {
    await iii.shutdown()
    process.exit(0)
  })
}

main().catch((err) => {
  console.log(`ERROR ${JSON.stringify({ message: String(err && err.stack ? err.stack : err) })}`)
  process.exit(1)
})
