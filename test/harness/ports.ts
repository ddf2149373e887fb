// Picks a free loopback TCP port by letting the kernel choose one.
// There is an unavoidable window between closing and the real server binding;
// callers that spawn servers retry on "address already in use".
import { createServer } from 'node:net';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('freePort: unexpected server address'));
        return;
      }
      const { port } = address;
      server.close(() => resolve(port));
    });
  });
}
