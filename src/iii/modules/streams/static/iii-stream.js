/*
 * iii-stream.js: live stream subscriptions in a web page, from an iii engine's stream port.
 *
 * A classic script with no dependency and no build step; the engine serves it at GET /iii-stream.js.
 *
 *   <script src="http://127.0.0.1:3112/iii-stream.js"></script>
 *   const client = iiiStream.connect("ws://127.0.0.1:3112")        // or connect() to where the script came from
 *   client.onStatus = (status, detail) => {}                       // "connecting" | "open" | "closed"
 *   const todos = client.subscribeGroup("todos", "inbox", {onChange(view, message) {}, onEvent(type, data) {}})
 *   todos.items                                                    // Map id -> item, kept live
 *   const one = client.subscribeItem("todos", "inbox", "t1", {onChange(value, message) {}})
 *   todos.leave(); client.close()
 *
 * Contracts:
 * - A subscription lives until leave() or client.close(), across reconnections: when the socket drops, the
 *   client reconnects with exponential backoff (250 ms doubling to 10 s, each delay cut by a random part of
 *   up to half, so that the pages of a restarted engine do not all come back at once) and joins every
 *   subscription again, so each one gets a fresh sync (changes made while disconnected are not replayed; the
 *   sync replaces what the client held).
 * - A group's items are keyed by their own `id` field in a sync (the engine sends values, not ids) and by the
 *   message's id in changes: store items with an `id` field equal to their item id.
 * - Handlers are called after the view has changed; an exception in one is reported and does not stop others.
 * - A message the client does not understand is ignored with a console.warn naming it, never a crash.
 */
(function (global) {
  "use strict";

  const BACKOFF_FIRST_MS = 250;
  const BACKOFF_MAX_MS = 10000;
  /** The event types the stream port sends (README, "Streams"); any other is warned about and ignored. */
  const EVENT_TYPES = new Set(["sync", "create", "update", "delete", "event", "unauthorized"]);

  /** ws(s):// from ws(s):// or http(s):// (an http URL names the same port). */
  function socketUrl(url) {
    const parsed = new URL(url, global.location ? global.location.href : undefined);
    if (parsed.protocol === "http:") parsed.protocol = "ws:";
    if (parsed.protocol === "https:") parsed.protocol = "wss:";
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      throw new Error("iii-stream: a stream URL is ws://, wss://, http:// or https://, not " + url);
    }
    return parsed.href;
  }

  /** Where this script was loaded from, as a socket URL: the engine's stream port (undefined if unknown). */
  const scriptOrigin = (function () {
    const script = global.document && global.document.currentScript;
    if (!script || !script.src) return undefined;
    try {
      return socketUrl(new URL(script.src).origin);
    } catch (_) {
      return undefined;
    }
  })();

  function warn(what, message) {
    console.warn("iii-stream: " + what, message);
  }

  /** Call a user's handler; its exception is reported, not thrown into the client. */
  function notify(handler, args) {
    if (typeof handler !== "function") return;
    try {
      handler.apply(undefined, args);
    } catch (error) {
      console.error("iii-stream: a handler failed", error);
    }
  }

  let nextSubscription = 0;

  /** One joined group (id null) or item. Created by Client.subscribeGroup / subscribeItem. */
  class Subscription {
    constructor(client, streamName, groupId, id, handlers) {
      this.client = client;
      this.subscriptionId = "sub-" + ++nextSubscription;
      this.streamName = streamName;
      this.groupId = groupId;
      this.id = id;
      this.handlers = handlers || {};
      /** A group's items: Map id -> item (groups only). */
      this.items = new Map();
      /** An item's value, null while absent (items only). */
      this.value = null;
      /** True once the first sync arrived (after each join, the sync replaces what was held). */
      this.synced = false;
      /** True when the engine refused this subscription (a stream:join trigger said unauthorized). */
      this.unauthorized = false;
    }

    get isGroup() {
      return this.id === null;
    }

    /** The join (or leave) message of this subscription. */
    message(type) {
      const data = { subscriptionId: this.subscriptionId, streamName: this.streamName, groupId: this.groupId };
      if (!this.isGroup) data.id = this.id;
      return { type: type, data: data };
    }

    /** Stop receiving: tell the engine, forget locally. Idempotent. */
    leave() {
      this.client._leave(this);
    }

    /** Apply one engine message (already matched to this subscription). */
    _apply(message) {
      const event = message.event;
      if (event.type === "unauthorized") {
        this.unauthorized = true;
        notify(this.handlers.onUnauthorized, [this, message]);
        return;
      }
      if (event.type === "event") {
        const inner = event.event;
        if (!inner || typeof inner.type !== "string") return warn("ignoring an event without a type", message);
        notify(this.handlers.onEvent, [inner.type, inner.data, message]);
        return;
      }
      if (event.type === "sync") {
        if (!this._sync(event.data, message)) return;
        this.synced = true;
      } else if (event.type === "create" || event.type === "update") {
        if (this.isGroup) this.items.set(message.id, event.data);
        else this.value = event.data;
      } else {
        // "delete"
        if (this.isGroup) this.items.delete(message.id);
        else this.value = null;
      }
      notify(this.handlers.onChange, [this.isGroup ? this : this.value, message]);
    }

    /** Replace the view with a sync's data; false (with a warning) when it has the wrong shape. */
    _sync(data, message) {
      if (!this.isGroup) {
        this.value = data === undefined ? null : data;
        return true;
      }
      if (!Array.isArray(data)) {
        warn("ignoring a group sync whose data is not a list", message);
        return false;
      }
      const items = new Map();
      data.forEach((item, index) => {
        const key = item !== null && typeof item === "object" && "id" in item ? String(item.id) : "#" + index;
        if (key.startsWith("#")) warn("an item without an id field is keyed by its position " + key, item);
        items.set(key, item);
      });
      this.items = items;
      return true;
    }
  }

  /** A connection to the stream port, reconnecting until close(). Created by iiiStream.connect. */
  class Client {
    constructor(url, options) {
      this.url = socketUrl(url);
      this.reconnect = !options || options.reconnect !== false;
      /** "connecting" | "open" | "closed" */
      this.status = "closed";
      /** Called as onStatus(status, detail); detail of "closed": {code, reason, wasOpen, retryInMs}. */
      this.onStatus = null;
      this._subscriptions = new Set();
      this._socket = null;
      this._failures = 0; // consecutive connections that closed: the backoff's exponent
      this._retry = null;
      this._closed = false;
      // Opened in a moment, so that the caller can set onStatus first and see "connecting".
      queueMicrotask(() => this._open());
    }

    /** Subscribe to a whole group: its items, every change to them and every event sent to it. */
    subscribeGroup(streamName, groupId, handlers) {
      return this._join(new Subscription(this, streamName, groupId, null, handlers));
    }

    /** Subscribe to one item: its value, its changes, and the events sent to that id. */
    subscribeItem(streamName, groupId, id, handlers) {
      return this._join(new Subscription(this, streamName, groupId, String(id), handlers));
    }

    /** Close the socket for good: no reconnection; subscriptions end. */
    close() {
      if (this._closed) return;
      this._closed = true;
      clearTimeout(this._retry);
      this._subscriptions.clear();
      const wasOpen = this.status === "open";
      if (this._socket) this._socket.close(1000, "client closed");
      this._setStatus("closed", { code: 1000, reason: "client closed", wasOpen: wasOpen, retryInMs: null });
    }

    _join(subscription) {
      if (this._closed) throw new Error("iii-stream: this client is closed");
      this._subscriptions.add(subscription);
      this._send(subscription.message("join")); // sent now if open; else by _open's onopen
      return subscription;
    }

    _leave(subscription) {
      if (this._subscriptions.delete(subscription)) this._send(subscription.message("leave"));
    }

    _send(message) {
      if (this._socket && this._socket.readyState === WebSocket.OPEN) this._socket.send(JSON.stringify(message));
    }

    _setStatus(status, detail) {
      this.status = status;
      notify(this.onStatus, [status, detail || {}]);
    }

    _open() {
      if (this._closed) return;
      this._setStatus("connecting");
      const socket = new WebSocket(this.url);
      this._socket = socket;
      let wasOpen = false;
      socket.onopen = () => {
        wasOpen = true;
        this._failures = 0;
        this._setStatus("open");
        for (const subscription of this._subscriptions) {
          subscription.synced = false;
          subscription.unauthorized = false;
          this._send(subscription.message("join"));
        }
      };
      socket.onmessage = (frame) => this._receive(frame.data);
      // A refused upgrade (the auth function said no: HTTP 401) and an unreachable port look alike to a page:
      // a close with code 1006 that never opened. detail.wasOpen tells them from a connection that dropped.
      socket.onclose = (closing) => {
        if (this._socket !== socket || this._closed) return;
        this._socket = null;
        let retryInMs = null;
        if (this.reconnect) {
          const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this._failures);
          retryInMs = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
          this._failures += 1;
          this._retry = setTimeout(() => this._open(), retryInMs);
        }
        this._setStatus("closed", { code: closing.code, reason: closing.reason, wasOpen: wasOpen, retryInMs });
      };
    }

    _receive(text) {
      let message;
      try {
        message = JSON.parse(text);
      } catch (_) {
        return warn("ignoring a message that is not JSON", text);
      }
      if (!message || message.type !== "stream" || !message.event || typeof message.event.type !== "string") {
        return warn("ignoring a message of unknown shape", message);
      }
      const eventType = message.event.type;
      if (!EVENT_TYPES.has(eventType)) return warn("ignoring an event of unknown type " + eventType, message);
      const id = message.id === undefined ? null : message.id;
      // A sync or a refusal answers one join: only the subscriptions of exactly that group or item take it.
      // A change or an event reaches the group's subscriptions and those of its item.
      const exact = eventType === "sync" || eventType === "unauthorized";
      for (const subscription of Array.from(this._subscriptions)) {
        if (subscription.unauthorized) continue;
        if (subscription.streamName !== message.streamName || subscription.groupId !== message.groupId) continue;
        if (exact ? subscription.id !== id : subscription.id !== null && subscription.id !== id) continue;
        subscription._apply(message);
      }
    }
  }

  global.iiiStream = {
    /** Open a client on url (ws://host:port, or http://); default: the origin this script was loaded from. */
    connect(url, options) {
      const target = url || scriptOrigin;
      if (!target) throw new Error("iii-stream: connect() needs the stream URL (ws://host:3112)");
      return new Client(target, options);
    },
    /** The stream port this script came from (ws://host:port), if it was loaded by a <script src>. */
    defaultUrl: scriptOrigin,
  };
})(globalThis);
