// A real socket.io 4 server standing in for Sim realtime (sim-realtime:3002).
// Usage: node socketio-server.js PORT  -> prints "ready PORT" once listening.
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 0);
const server = http.createServer();
const io = new Server(server, { pingInterval: 25000, pingTimeout: 20000, maxHttpBufferSize: 1e6 });

io.on('connection', (socket) => {
  socket.on('echo', (payload, ack) => {
    ack({
      payload,
      transport: socket.conn.transport.name,
      forwardedFor: socket.handshake.headers['x-forwarded-for'] || null,
    });
  });
});

server.listen(port, '127.0.0.1', () => {
  console.log(`ready ${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
