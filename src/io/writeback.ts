/**
 * A datasync of a file run in the background, one at a time, while more is
 * written: the writeback then overlaps the work, and the fsync that must be
 * waited for (a commit, a checkpoint) finds little left to write.
 */
import type { FileHandle } from 'node:fs/promises';

export class BackgroundSync {
  private running: Promise<void> | null = null;
  /** The first failure: the kernel reports a failed writeback to one sync of the file only. */
  private error: unknown = null;

  constructor(private readonly fh: FileHandle) {}

  /** True while a datasync started here runs. */
  get busy(): boolean {
    return this.running !== null;
  }

  /** Start a datasync, unless one is running. */
  start(): void {
    if (this.running) return;
    const s = this.fh.datasync().then(
      () => {
        if (this.running === s) this.running = null;
      },
      (e: unknown) => {
        this.error ??= e;
        if (this.running === s) this.running = null;
      },
    );
    this.running = s;
  }

  /** Wait for the one running, if any; then throw the first failure of any, kept until now. */
  async wait(): Promise<void> {
    await this.running;
    if (this.error !== null) throw this.error;
  }

  /** Wait for the one running, if any, whatever its outcome (the file is being given up). */
  async drain(): Promise<void> {
    await this.running;
  }
}
