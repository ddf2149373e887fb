import { Worker } from 'node:worker_threads';
import { RegistryError } from '../errors.ts';

interface CheckRequest {
  id: number;
  password: string;
  hash: string;
}
interface CheckAnswer {
  id: number;
  ok: boolean;
}

/** Does `password` match the bcrypt `hash`? */
export interface PasswordChecker {
  check(password: string, hash: string): Promise<boolean>;
  close(): Promise<void>;
}

interface Job {
  request: CheckRequest;
  resolve(ok: boolean): void;
  reject(err: Error): void;
}

interface Slot {
  worker: Worker;
  job: Job | undefined;
}

/**
 * The worker: one bcrypt check at a time (compareSync: the thread has nothing
 * else to do). Plain JavaScript given as source, because a worker does not
 * inherit tsx's loader on Node 20, and it must run the same from the sources
 * and from dist/. bcryptjs is pure JavaScript, resolved by the main thread.
 * A malformed hash is a failed check, not a crash.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
import(workerData.bcrypt).then(({ default: bcrypt }) => {
  parentPort.on('message', ({ id, password, hash }) => {
    let ok = false;
    try { ok = bcrypt.compareSync(password, hash); } catch { ok = false; }
    parentPort.postMessage({ id, ok });
  });
});
`;
const BCRYPT_URL = import.meta.resolve('bcryptjs');

/**
 * bcrypt checks on worker threads, so a flood of guesses costs at most
 * `workers` cores and never the event loop that serves logged-in pulls. At
 * most `queue` checks wait for a worker; beyond that the answer is 429 with
 * Retry-After at once (a queue without a bound would hold every guesser's
 * connection and make the next legitimate login wait behind all of them).
 * Workers start on the first check: token-only setups never start one.
 */
export class PasswordCheckPool implements PasswordChecker {
  private readonly slots: Slot[] = [];
  private readonly waiting: Job[] = [];
  private nextId = 1;
  private closed = false;

  constructor(private readonly opts: { workers: number; queue: number }) {}

  check(password: string, hash: string): Promise<boolean> {
    if (this.closed) return Promise.reject(new Error('password checks are closed'));
    const idle = this.idleSlot();
    if (!idle && this.waiting.length >= this.opts.queue) return Promise.reject(busy());
    return new Promise<boolean>((resolve, reject) => {
      const job: Job = { request: { id: this.nextId++, password, hash }, resolve, reject };
      if (idle) this.start(idle, job);
      else this.waiting.push(job);
    });
  }

  /** Checks in progress or waiting (for tests and metrics). */
  get pending(): number {
    return this.waiting.length + this.slots.filter((s) => s.job).length;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.waiting.splice(0)) job.reject(new Error('password checks are closed'));
    await Promise.all(this.slots.splice(0).map((s) => s.worker.terminate()));
  }

  private idleSlot(): Slot | undefined {
    const idle = this.slots.find((s) => !s.job);
    if (idle) return idle;
    if (this.slots.length < this.opts.workers) return this.spawn();
    return undefined;
  }

  private spawn(): Slot {
    const slot: Slot = { worker: new Worker(WORKER_SOURCE, { eval: true, workerData: { bcrypt: BCRYPT_URL } }), job: undefined };
    // Idle workers do not keep a stopping process alive.
    slot.worker.unref();
    slot.worker.on('message', (answer: CheckAnswer) => {
      const job = slot.job;
      if (!job || job.request.id !== answer.id) return;
      slot.job = undefined;
      job.resolve(answer.ok);
      this.next(slot);
    });
    const lost = (err: Error) => {
      const i = this.slots.indexOf(slot);
      if (i < 0) return;
      // A worker that died takes only its own check with it; the next check starts a new one.
      this.slots.splice(i, 1);
      slot.job?.reject(err);
      slot.job = undefined;
      const job = this.waiting.shift();
      if (job && !this.closed) this.start(this.spawn(), job);
    };
    slot.worker.on('error', lost);
    slot.worker.on('exit', (code) => lost(new Error(`password worker exited with code ${code}`)));
    this.slots.push(slot);
    return slot;
  }

  private start(slot: Slot, job: Job): void {
    slot.job = job;
    // Referenced while it works: a check in progress is a reason to stay alive.
    slot.worker.ref();
    slot.worker.postMessage(job.request);
  }

  private next(slot: Slot): void {
    const job = this.waiting.shift();
    if (job) this.start(slot, job);
    else slot.worker.unref();
  }
}

function busy(): RegistryError {
  return new RegistryError('TOOMANYREQUESTS', 'too many requests: password checks are busy', { headers: { 'retry-after': '1' } });
}
