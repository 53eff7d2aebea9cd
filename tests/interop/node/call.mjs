// One call through the engine with the official Node SDK: `node call.mjs FUNCTION_ID < payload.json`.
//
// The JSON payload is read from stdin (it may be larger than a command-line argument may be).
// Connects to $III_URL, triggers the function (request/response, timeout $III_CALL_TIMEOUT_MS or 60 s),
// prints `RESULT <json>` on success or `ERROR <json>` on failure, shuts the client down and exits
// (0 on success, 1 otherwise).

import { registerWorker } from 'iii-sdk'
import { tokenHeaders } from './token.mjs'

async function main() {
  const [functionId] = process.argv.slice(2)
  const url = process.env.III_URL
  if (!url || !functionId) throw new Error('usage: III_URL=ws://... node call.mjs FUNCTION_ID < payload.json')
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const payloadText = Buffer.concat(chunks).toString('utf-8')
  const timeoutMs = Number(process.env.III_CALL_TIMEOUT_MS ?? 60000)
  const iii = registerWorker(url, { workerName: `interop-node-caller-${process.pid}`, headers: tokenHeaders() })
  let code = 0
  try {
    const result = await iii.trigger({
      function_id: functionId,
      payload: payloadText.trim() === '' ? {} : JSON.parse(payloadText),
      timeoutMs,
    })
    console.log(`RESULT ${JSON.stringify(result ?? null)}`)
  } catch (err) {
    console.log(`ERROR ${JSON.stringify({ code: err.code, message: err.message, stacktrace: err.stacktrace })}`)
    code = 1
  }
  await iii.shutdown()
  process.exit(code)
}

main().catch((err) => {
  console.log(`ERROR ${JSON.stringify({ message: String(err && err.stack ? err.stack : err) })}`)
  process.exit(1)
})
