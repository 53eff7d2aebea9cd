// A worker on the official Node SDK bound to the observability module's `log` trigger type, for
// test_observability_triggers.py: `III_URL=ws://... OTEL_SERVICE_NAME=SERVICE node obs_log_trigger.mjs PREFIX LEVEL`.
//
// Registers PREFIX.log-sink, bound to `log` with {level: LEVEL}: it prints `GOT {record}`, then logs `handled <body>`
// at LEVEL with the SDK's Logger (a line that would fire it again, forever, if the engine let it). Registers
// PREFIX.emit {lines: [{level, message}]}, which logs each line with the Logger. Prints `READY {}` once the engine
// has the binding, and waits for stdin to close.

import { registerWorker } from 'iii-sdk'
import { Logger } from '@iii-dev/helpers/observability'

async function main() {
  const [prefix, level] = process.argv.slice(2)
  const service = process.env.OTEL_SERVICE_NAME
  const iii = registerWorker(process.env.III_URL, { workerName: service })
  const logger = new Logger(undefined, service)
  iii.registerFunction(`${prefix}.log-sink`, async (record) => {
    console.log(`GOT ${JSON.stringify(record)}`)
    logger[level](`handled ${record.body}`)
    return {}
  })
  iii.registerFunction(`${prefix}.emit`, async (data) => {
    for (const line of data.lines) logger[line.level](line.message)
    return {}
  })
  iii.registerTrigger({ type: 'log', function_id: `${prefix}.log-sink`, config: { level } })
  // the engine reads this connection's messages in order: once it answers, the binding is in place
  await iii.trigger({ function_id: 'engine::health::check', payload: {} })
  console.log('READY {}')
  process.stdin.resume()
  process.stdin.on('end', async () => {
    await iii.shutdown()
    process.exit(0)
  })
}

main().catch((err) => {
  console.log(`FATAL ${JSON.stringify({ message: String(err && err.stack ? err.stack : err) })}`)
  process.exit(1)
})
