/**
 * A TCP proxy a test can cut and heal: a real network partition between one process's gRPC
 * clients and the Temporal server, while both go on running. With `tls`, it is also a TLS
 * front (as an ingress terminates TLS before a Temporal frontend): it serves HTTP/2 over TLS with
 * the given certificate, requires a client certificate from `clientCa` when one is given (mTLS),
 * and passes the decrypted stream to the plaintext upstream.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface TlsFront {
  key: string;
  cert: string;
  /** PEM of the CA client certificates must chain to; without it no client certificate is asked for. */
  clientCa?: string;
}

export interface TcpProxy {
  /** host:port to connect to instead of the upstream. */
  address: string;
  /** TLS only: connections whose handshake completed, and the client certificates' subjects (CN). */
  handshakes: { authorized: number; clientNames: string[] };
  /** Drops every open connection and refuses new ones until healed. */
  cut(): void;
  heal(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(upstream: string, front?: { tls: TlsFront }): Promise<TcpProxy> {
  const at = upstream.lastIndexOf(':');
  const upstreamHost = upstream.slice(0, at);
  const upstreamPort = Number(upstream.slice(at + 1));
  const sockets = new Set<net.Socket>();
  let open = true;
  const handshakes = { authorized: 0, clientNames: [] as string[] };
  const relay = (downstream: net.Socket) => {
    if (!open) {
      downstream.destroy();
      return;
    }
    const up = net.connect(upstreamPort, upstreamHost);
    sockets.add(downstream);
    sockets.add(up);
    const drop = () => {
      downstream.destroy();
      up.destroy();
      sockets.delete(downstream);
      sockets.delete(up);
    };
    for (const socket of [downstream, up]) {
      socket.on('error', drop);
      socket.on('close', drop);
    }
    downstream.pipe(up);
    up.pipe(downstream);
  };
  const server =
    front === undefined
      ? net.createServer(relay)
      : tls.createServer(
          {
            key: front.tls.key,
            cert: front.tls.cert,
            ALPNProtocols: ['h2'],
            ...(front.tls.clientCa !== undefined ? { ca: front.tls.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
          },
          (socket) => {
            handshakes.authorized += 1;
            const name = socket.getPeerCertificate()?.subject?.CN;
            if (typeof name === 'string') handshakes.clientNames.push(name);
            relay(socket);
          },
        );
  // A client that gives up on the handshake (wrong CA, no certificate) is not the proxy's error.
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  const cut = () => {
    open = false;
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };
  return {
    address: `127.0.0.1:${port}`,
    handshakes,
    cut,
    heal() {
      open = true;
    },
    close() {
      cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
