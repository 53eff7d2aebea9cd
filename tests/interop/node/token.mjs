// The engine's token from $III_TOKEN as the handshake headers of the control socket (none when unset).
//
// The official Node SDK sends these headers on its control socket only; its channel sockets carry no headers
// (the channel end's key opens them) and its telemetry socket none either.
export function tokenHeaders() {
  const token = (process.env.III_TOKEN ?? '').trim()
  return token ? { Authorization: `Bearer ${token}` } : undefined
}
