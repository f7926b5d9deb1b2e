/** Wrapping every function of an activity map the same way, keeping the names Temporal shows. */

export type AnyActivity = (...args: never[]) => Promise<unknown>;

export function wrapEachActivity<T extends Record<string, AnyActivity>>(
  activities: T,
  wrap: (name: string, fn: AnyActivity) => AnyActivity,
): T {
  const wrapped: Record<string, AnyActivity> = {};
  for (const [name, fn] of Object.entries(activities)) {
    const run = wrap(name, fn);
    Object.defineProperty(run, 'name', { value: name });
    wrapped[name] = run;
  }
  return wrapped as T;
}
