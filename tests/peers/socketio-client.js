// A real socket.io 4 client, the browser's stand-in. Connects to URL through the
// edge, sends a text and a binary message, prints what came back as JSON.
// Usage: node socketio-client.js URL TRANSPORTS [noupgrade]
//   TRANSPORTS: "polling", "websocket" or "polling,websocket"
const { io } = require('socket.io-client');

const [url, transports = 'polling,websocket', mode] = process.argv.slice(2);
// COOKIE: the edge session of a signed-in user (/socket.io/ is gated). A
// browser also says its polling POSTs are same-origin (the edge's CSRF check).
const extraHeaders = process.env.COOKIE ? { cookie: process.env.COOKIE, 'sec-fetch-site': 'same-origin' } : {};
const socket = io(url, {
  extraHeaders,
  transports: transports.split(','),
  upgrade: mode !== 'noupgrade',
  reconnection: false,
  timeout: 5000,
});

const fail = (why) => {
  console.log(JSON.stringify({ ok: false, error: String(why) }));
  process.exit(1);
};
setTimeout(() => fail('timed out'), 15000);
socket.on('connect_error', (err) => fail(`connect_error: ${err.message}`));

socket.on('connect', async () => {
  try {
    // When upgrading is allowed, wait for it (the 15 s limit above still
    // applies); a slow machine must not turn into a "never upgraded" report.
    if (transports.includes('websocket') && transports.includes('polling') && mode !== 'noupgrade') {
      await new Promise((resolve) => {
        if (socket.io.engine.transport.name === 'websocket') return resolve();
        socket.io.engine.once('upgrade', resolve);
      });
    }
    const text = await socket.timeout(5000).emitWithAck('echo', 'héllo through the edge');
    const bin = await socket.timeout(5000).emitWithAck('echo', Buffer.from([0, 1, 2, 254, 255]));
    const binary = Buffer.from(bin.payload);
    console.log(JSON.stringify({
      ok: true,
      text: text.payload,
      binary: [...binary],
      serverTransport: bin.transport,
      clientTransport: socket.io.engine.transport.name,
      forwardedFor: text.forwardedFor,
    }));
    socket.close();
    process.exit(0);
  } catch (e) {
    fail(e);
  }
});
