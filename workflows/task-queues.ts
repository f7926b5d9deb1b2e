/** Task queue names: one for the control workers, one per compute host for its agent. */
export const controlTaskQueue = 'vtpm-control';

export function hostTaskQueue(host: string): string {
  return `vtpm-host-${host}`;
}
