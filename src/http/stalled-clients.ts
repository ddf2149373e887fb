import type { Server } from 'node:http';
import { Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';

interface Watched {
  /** Bytes the kernel had taken at the last look. */
  delivered: number;
  /** Since when the client has taken none while some were waiting. */
  since: number;
}

/**
 * Closes the connection of a client that stopped reading (nginx's
 * send_timeout): archway has bytes waiting in the socket and the socket has
 * taken none of them for `idleMs`. Closing the socket ends the response, and
 * its 'close' releases what the answer held (the blob's eviction pin, the
 * file, a fill's reader and its buffers). The clock runs only while bytes
 * wait: a client whose answer waits for an upstream (a follower of a slow
 * fill) is not at fault and is left to the upstream deadlines; an idle
 * keep-alive connection is left to keepAliveTimeout.
 *
 * One timer for every connection of every listener, whatever writes the body
 * (a cached file through sendDirect, a piped fill stream, a JSON answer, an
 * answer written on the raw socket).
 */
export class StalledClients {
  private readonly watched = new Map<Socket, Watched>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private idleMs: number,
    private readonly onStalled: () => void,
    private readonly now: () => number = () => performance.now(),
  ) {
    // Looked at four times per limit, at least every 5 s: a stalled client is closed
    // within idleMs plus a quarter of it (at most 5 s) after its last progress.
    this.timer = setInterval(() => this.sweep(), Math.max(50, Math.min(idleMs / 4, 5000)));
    this.timer.unref();
  }

  /** timeouts.clientIdle of a reloaded configuration (the sweep keeps the period it started with). */
  setIdle(ms: number): void {
    this.idleMs = ms;
  }

  /** Watch every connection of this listener. */
  attach(server: Server): void {
    // Over TLS the plaintext waits in the TLS socket; the TCP socket under it shows nothing pending.
    const event = server instanceof HttpsServer ? 'secureConnection' : 'connection';
    server.on(event, (socket: Socket) => {
      this.watched.set(socket, { delivered: delivered(socket), since: this.now() });
      socket.once('close', () => this.watched.delete(socket));
    });
  }

  stop(): void {
    clearInterval(this.timer);
    this.watched.clear();
  }

  private sweep(): void {
    const now = this.now();
    for (const [socket, w] of this.watched) {
      const sent = delivered(socket);
      if (sent !== w.delivered || socket.writableLength === 0) {
        w.delivered = sent;
        w.since = now;
      } else if (now - w.since >= this.idleMs) {
        this.watched.delete(socket);
        // A reset also drops what the kernel still holds for this client (megabytes it
        // will not read); a TLS socket has no TCP handle of its own to reset.
        if (socket instanceof TLSSocket) socket.destroy();
        else socket.resetAndDestroy();
        this.onStalled();
      }
    }
  }
}

/**
 * Bytes the kernel has accepted: Node's bytesWritten also counts what still
 * sits in the socket's own buffer, which is exactly what a stalled client
 * leaves there.
 */
function delivered(socket: Socket): number {
  return socket.bytesWritten - socket.writableLength;
}
