/**
 * One operation per instance at a time, in the order the requests arrived. Every accepted request
 * takes a ticket; a request runs only while its ticket is at the head of the queue, and that
 * condition is evaluated again after every wake-up, so when the running operation ends exactly one
 * waiter (the next in line) goes on. A plain `await condition(() => !busy)` lets every waiter
 * through at once when `busy` clears: that is the overlap this module exists to prevent.
 *
 * The wait function is handed in (Temporal's `condition` in the workflow) so the module is pure and
 * its ordering is tested without a server.
 */
export type WaitUntil = (ready: () => boolean) => Promise<unknown>;

export class QueueFull extends Error {
  override readonly name = 'OperationQueueFull';
  readonly retryable = false;
}

export interface Ticket {
  /** Position in arrival order, from 1. */
  readonly number: number;
  readonly label: string;
}

export class OneAtATime {
  private readonly queue: Ticket[] = [];
  private issued = 0;

  constructor(
    private readonly waitUntil: WaitUntil,
    /** Requests allowed to wait behind the running one; more are refused, not queued forever. */
    private readonly maxWaiting = 32,
  ) {}

  /** No operation runs and none waits. */
  get idle(): boolean {
    return this.queue.length === 0;
  }

  /** The running operation's label, if any. */
  get running(): string | null {
    return this.queue[0]?.label ?? null;
  }

  /** Labels of the requests waiting behind the running one, in the order they will run. */
  get waiting(): string[] {
    return this.queue.slice(1).map((t) => t.label);
  }

  /** Runs `body` when every request that arrived before it has finished; refuses when the queue is full. */
  async run<T>(label: string, body: () => Promise<T>): Promise<T> {
    if (this.queue.length > this.maxWaiting) {
      throw new QueueFull(`${this.queue.length - 1} operations already wait behind ${this.running}; try again when they have run`);
    }
    const ticket: Ticket = { number: ++this.issued, label };
    this.queue.push(ticket);
    try {
      await this.waitUntil(() => this.queue[0] === ticket);
      return await body();
    } finally {
      this.queue.splice(this.queue.indexOf(ticket), 1);
    }
  }
}
