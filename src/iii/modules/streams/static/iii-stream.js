// iii-stream.js: the browser client of the engine's stream subscriptions (globalThis.iiiStream).
// Placeholder: the client itself is being written separately; the engine serves this file at /iii-stream.js.
