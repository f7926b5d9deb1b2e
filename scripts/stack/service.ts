/** What the stack manager knows about one service it can start, check and stop. */
export interface Service {
  name: string;
  /** Where clients reach it, as printed by `status`. */
  address: string;
  /** Loopback TCP ports it listens on; a port held by something unhealthy is an error at `up`. */
  ports: number[];
  logFile: string;
  /** Resolves to null when the service answers as it should, else to the reason it does not. */
  health(): Promise<string | null>;
  /** Starts the service and returns the pids that `down` must stop, main process first. */
  start(): Promise<number[]>;
  /** How long `up` waits for health after start. */
  startTimeoutMs: number;
  /** Runs after the service is healthy, whether we started it or attached to it. */
  afterHealthy?(): Promise<void>;
  /** Runs before our pids are signalled. */
  beforeStop?(): Promise<void>;
}
