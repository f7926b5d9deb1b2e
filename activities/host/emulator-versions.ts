/**
 * Which swtpm and libtpms a host runs: a state written by one version is readable by the same or
 * a newer one, not always by an older one (libtpms adds to its state format, never removes). A
 * live migration hands the running state to the target's swtpm only at the very end, after all
 * the memory has moved, so the versions are compared before anything moves.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface EmulatorVersions {
  /** swtpm's own version, from `swtpm socket --print-capabilities`. */
  swtpm: string;
  /** The libtpms swtpm loads, from the name of the shared object it links (libtpms.so.0.9.2). */
  libtpms: string;
}

/** swtpm or libtpms could not be found or read on this host. */
export class EmulatorVersionUnknown extends Error {
  override readonly name = 'EmulatorVersionUnknown';
  readonly retryable = false;
}

function onPath(name: string, searchPath: string): string {
  for (const dir of searchPath.split(path.delimiter)) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not in this folder
    }
  }
  throw new EmulatorVersionUnknown(`${name} is not on the agent's search path (${searchPath}): install Debian's swtpm package`);
}

/** The `version` of swtpm's capabilities JSON. */
export function swtpmVersionOf(capabilities: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(capabilities);
  } catch {
    throw new EmulatorVersionUnknown(`swtpm --print-capabilities printed no JSON: ${capabilities.slice(0, 200)}`);
  }
  const version = (parsed as { version?: unknown } | null)?.version;
  if (typeof version !== 'string' || !/^\d+\.\d+(\.\d+)?$/.test(version)) {
    throw new EmulatorVersionUnknown(`swtpm --print-capabilities names no version: ${capabilities.slice(0, 200)}`);
  }
  return version;
}

/** The libtpms version from `ldd swtpm`: the file libtpms.so.0 resolves to carries it in its name. */
export function libtpmsVersionOf(lddOutput: string, resolve: (file: string) => string = fs.realpathSync): string {
  const match = /^\s*libtpms\.so\.\d+\s+=>\s+(\S+)/m.exec(lddOutput);
  if (match === null) throw new EmulatorVersionUnknown(`swtpm does not link libtpms, by ldd: ${lddOutput.slice(0, 300)}`);
  const file = path.basename(resolve(match[1]!));
  const version = /^libtpms\.so\.(\d+\.\d+\.\d+)$/.exec(file);
  if (version === null) throw new EmulatorVersionUnknown(`cannot tell libtpms's version from ${match[1]} (it resolves to ${file})`);
  return version[1]!;
}

export async function readEmulatorVersions(searchPath: string): Promise<EmulatorVersions> {
  const swtpm = onPath('swtpm', searchPath);
  const env = { ...process.env, PATH: searchPath };
  const [capabilities, ldd] = await Promise.all([
    run(swtpm, ['socket', '--print-capabilities'], { timeout: 10_000, env }).then((r) => r.stdout),
    run('ldd', [swtpm], { timeout: 10_000, env }).then((r) => r.stdout),
  ]).catch((err: unknown) => {
    throw new EmulatorVersionUnknown(`could not ask ${swtpm} for its version: ${(err as Error).message}`);
  });
  return { swtpm: swtpmVersionOf(capabilities), libtpms: libtpmsVersionOf(ldd) };
}
