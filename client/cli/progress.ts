/**
 * The progress of a running operation: on a terminal, a live status line with the running step
 * and its elapsed time above which finished steps settle; elsewhere, one line per finished step.
 */
import type { ProgressEvent, Step } from '../timeline';
import { duration, stepLine } from './render';

export interface Terminal {
  write(text: string): void;
  /** A terminal gets the live line; a pipe or file gets plain lines. */
  live: boolean;
}

const spinner = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const REDRAW_MS = 100;

export class ProgressDisplay {
  private readonly running = new Map<string, Step>();
  /** The latest progress each running step reported, by step name. */
  private readonly reported = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private frame = 0;
  private statusShown = false;

  constructor(private readonly out: Terminal) {}

  show(event: ProgressEvent): void {
    if (event.kind === 'step-started') {
      this.running.set(this.key(event.step), event.step);
      this.startRedrawing();
    } else if (event.kind === 'step-progress') {
      this.reported.set(event.name, event.progress);
      if (this.out.live) this.redraw();
      else this.out.write(`  … ${event.name}: ${event.progress}\n`);
    } else if (event.kind === 'step-finished') {
      this.running.delete(this.key(event.step));
      this.reported.delete(event.step.name);
      this.clearStatus();
      this.out.write(`  ${stepLine(event.step)}\n`);
      this.redraw();
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.clearStatus();
  }

  private key(step: Step): string {
    return `${step.name}@${step.scheduledAt}`;
  }

  private startRedrawing(): void {
    if (!this.out.live || this.timer) return;
    this.timer = setInterval(() => this.redraw(), REDRAW_MS);
    this.timer.unref();
    this.redraw();
  }

  private redraw(): void {
    if (!this.out.live) return;
    this.clearStatus();
    const steps = [...this.running.values()];
    if (steps.length === 0) return;
    this.frame = (this.frame + 1) % spinner.length;
    const now = Date.now();
    const text = steps
      .map((s) => {
        const reported = this.reported.get(s.name);
        return `${s.name} on ${s.where} ${duration(now - Date.parse(s.scheduledAt))}${reported === undefined ? '' : `: ${reported}`}`;
      })
      .join(', ');
    this.out.write(`  ${spinner[this.frame]} ${text}`);
    this.statusShown = true;
  }

  private clearStatus(): void {
    if (!this.statusShown) return;
    this.out.write('\r\x1b[2K');
    this.statusShown = false;
  }
}
