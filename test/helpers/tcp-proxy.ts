/**
 * A TCP proxy a test can cut and heal: a real network partition between one process's gRPC
 * clients and the Temporal server, while both go on running.
 */
import net from 'node:net';

export interface TcpProxy {
  /** host:port to connect to instead of the upstream. */
  address: string;
  /** Drops every open connection and refuses new ones until healed. */
  cut(): void;
  heal(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(upstream: string): Promise<TcpProxy> {
  const at = upstream.lastIndexOf(':');
  const upstreamHost = upstream.slice(0, at);
  const upstreamPort = Number(upstream.slice(at + 1));
  const sockets = new Set<net.Socket>();
  let open = true;
  const server = net.createServer((downstream) => {
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
  });
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
