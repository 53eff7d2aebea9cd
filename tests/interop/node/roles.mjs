// Functions that the Node interop workers register, grouped by role.
//
// Each role is `(iii) => FunctionRef[]`: it registers its functions on an official `iii-sdk@0.22.1` client
// and returns what `registerFunction` returned.
// The pytest wrapper (tests/interop/test_node_sdk.py) starts one worker process per role, so functions
// that call each other run in separate processes and every call and every channel byte crosses our engine.
//
// The seed's Node examples are reproduced as written, except for the two API changes of the published
// 0.22 SDK: `registerFunction(id, handler)` takes a string id (not `{ id }`), and `createChannel` is the
// helper `createChannel(iii)` from `iii-sdk/helpers` (the `iii.createChannel()` method was removed).

import { createHash } from 'node:crypto'
import { createChannel } from 'iii-sdk/helpers'
import { http } from '@iii-dev/helpers/http'

// Deterministic test data; tests/interop/test_node_sdk.py and python_worker.py compute the same bytes.
export function pattern(length) {
  const out = Buffer.alloc(length)
  for (let i = 0; i < length; i++) out[i] = (i * 31 + (i >> 10)) % 251
  return out
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex')

// Write through the Writable and resolve once the SDK has handed every frame to the socket.
const streamWrite = (stream, data) =>
  new Promise((resolve, reject) => stream.write(data, (err) => (err ? reject(err) : resolve())))

const streamEnd = (stream, data) =>
  new Promise((resolve, reject) =>
    data === undefined
      ? stream.end((err) => (err ? reject(err) : resolve()))
      : stream.end(data, (err) => (err ? reject(err) : resolve())),
  )

// Write `size` pattern bytes framed by two text messages; return what was written.
async function produce(writer, size, lang) {
  const data = pattern(size)
  writer.sendMessage(`start:${lang}`)
  await streamWrite(writer.stream, data)
  writer.sendMessage(`end:${lang}`)
  await streamEnd(writer.stream)
  return { sha256: sha256(data), length: data.length }
}

// Read a channel to its end, collecting text messages; return what was read.
async function digest(reader) {
  const messages = []
  reader.onMessage((msg) => messages.push(msg))
  const raw = await reader.readAll()
  return { sha256: sha256(raw), length: raw.length, messages }
}

export const roles = {
  // ---- the seed's one-way example -----------------------------------------------------------------
  'data.processor': (iii) => [
    iii.registerFunction('data.processor', async (input) => {
      const chunks = []
      for await (const chunk of input.reader.stream) {
        chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk))
      }

      const records = JSON.parse(Buffer.concat(chunks).toString('utf-8'))
      const sum = records.reduce((acc, r) => acc + r.value, 0)

      return {
        label: input.label,
        count: records.length,
        sum,
        average: sum / records.length,
      }
    }),
  ],

  'data.sender': (iii) => [
    iii.registerFunction('data.sender', async (input) => {
      const channel = await createChannel(iii)

      const writePromise = new Promise((resolve, reject) => {
        const payload = Buffer.from(JSON.stringify(input.records))
        channel.writer.stream.end(payload, (err) => {
          if (err) reject(err)
          else resolve()
        })
      })

      const result = await iii.trigger({
        function_id: 'data.processor',
        payload: { label: 'metrics-batch', reader: channel.readerRef },
      })

      await writePromise
      return result
    }),
  ],

  // ---- the seed's bidirectional example -----------------------------------------------------------
  'stream.worker': (iii) => [
    iii.registerFunction('stream.worker', async (input) => {
      const { reader, writer } = input
      const chunks = []
      let chunkCount = 0

      for await (const chunk of reader.stream) {
        chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk))
        chunkCount++
        writer.sendMessage(JSON.stringify({ type: 'progress', chunks_received: chunkCount }))
      }

      const fullData = Buffer.concat(chunks).toString('utf-8')
      const words = fullData.split(/\s+/).filter(Boolean)

      writer.sendMessage(
        JSON.stringify({
          type: 'complete',
          word_count: words.length,
          byte_count: Buffer.concat(chunks).length,
        }),
      )

      writer.stream.end(Buffer.from(JSON.stringify({ words: words.slice(0, 5), total: words.length })))

      return { status: 'done' }
    }),
  ],

  'stream.coordinator': (iii) => [
    iii.registerFunction('stream.coordinator', async (input) => {
      const inputChannel = await createChannel(iii)
      const outputChannel = await createChannel(iii)

      const messages = []
      outputChannel.reader.onMessage((msg) => {
        messages.push(JSON.parse(msg))
      })

      const textBuf = Buffer.from(input.text)
      const writePromise = new Promise((resolve, reject) => {
        let offset = 0
        const writeNext = () => {
          while (offset < textBuf.length) {
            const end = Math.min(offset + input.chunkSize, textBuf.length)
            const chunk = textBuf.subarray(offset, end)
            offset = end

            if (!inputChannel.writer.stream.write(chunk)) {
              inputChannel.writer.stream.once('drain', writeNext)
              return
            }
          }
          inputChannel.writer.stream.end((err) => {
            if (err) reject(err)
            else resolve()
          })
        }
        writeNext()
      })

      const triggerPromise = iii.trigger({
        function_id: 'stream.worker',
        payload: {
          reader: inputChannel.readerRef,
          writer: outputChannel.writerRef,
        },
      })

      const resultChunks = []
      for await (const chunk of outputChannel.reader.stream) {
        resultChunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk))
      }

      await writePromise
      const workerResult = await triggerPromise
      const binaryResult = JSON.parse(Buffer.concat(resultChunks).toString('utf-8'))

      return { messages, binaryResult, workerResult }
    }),
  ],

  // ---- Node <-> official Python channel exchange (peer functions live in python_worker.py) --------
  'interop.node': (iii) => [
    // The other side created the channel and passes its reader: read it all.
    iii.registerFunction('interop.node.digest', async (input) => digest(input.reader)),

    // The other side created the channel and passes its writer: write the pattern into it.
    iii.registerFunction('interop.node.produce', async (input) => produce(input.writer, input.size, 'node')),

    // Create a channel, hand its reader to `input.target` and write while the target reads.
    iii.registerFunction('interop.node.send_to', async (input) => {
      const channel = await createChannel(iii)
      const readPromise = iii.trigger({
        function_id: input.target,
        payload: { reader: channel.readerRef },
      })
      const written = await produce(channel.writer, input.size, 'node')
      return { written, read: await readPromise }
    }),

    // Create a channel, hand its writer to `input.target` and read while the target writes.
    iii.registerFunction('interop.node.fetch_from', async (input) => {
      const channel = await createChannel(iii)
      const writePromise = iii.trigger({
        function_id: input.target,
        payload: { writer: channel.writerRef, size: input.size },
      })
      const read = await digest(channel.reader)
      return { written: await writePromise, read }
    }),
  ],

  // HTTP through the engine's http trigger, with the official helpers: `PUT /interop/node/upload` hashes the
  // request body and returns a response object; `GET /interop/node/stream/:size` streams with http()'s res;
  // `GET /interop/node/guarded/:id` is behind the middleware `interop.node.http_guard`, which lets requests
  // with an `X-Pass` header through and answers the others itself (401).
  'interop.node.http': (iii) => {
    const refs = [
      iii.registerFunction('interop.node.http_guard', async (input) => {
        const { headers, method, path_params } = input.request
        if ('x-pass' in headers) return { action: 'continue' }
        return {
          action: 'respond',
          response: {
            status_code: 401,
            headers: { 'X-Rejected-By': 'official-node' },
            body: { error: 'no pass', method, id: path_params.id },
          },
        }
      }),
      iii.registerFunction('interop.node.http_guarded', async (req) => ({
        status_code: 200,
        body: { id: req.path_params.id, sdk: 'official-node' },
      })),
      iii.registerFunction('interop.node.http_upload', async (req) => {
        const body = await req.request_body.readAll()
        return {
          status_code: 201,
          headers: { 'X-Handled-By': 'official-node' },
          body: { sha256: sha256(body), length: body.length },
        }
      }),
      iii.registerFunction(
        'interop.node.http_stream',
        http(async (req, res) => {
          res.status(206)
          res.headers({ 'content-type': 'application/octet-stream', 'x-handled-by': 'official-node' })
          await streamEnd(res.stream, pattern(Number(req.path_params.size)))
        }),
      ),
    ]
    const routes = [
      ['interop.node.http_upload', 'PUT', '/interop/node/upload', []],
      ['interop.node.http_stream', 'GET', '/interop/node/stream/:size', []],
      ['interop.node.http_guarded', 'GET', '/interop/node/guarded/:id', ['interop.node.http_guard']],
    ]
    for (const [function_id, http_method, api_path, middleware] of routes) {
      const config = { api_path, http_method }
      if (middleware.length > 0) config.middleware_function_ids = middleware
      iii.registerTrigger({ type: 'http', function_id, config })
    }
    return refs
  },
}
