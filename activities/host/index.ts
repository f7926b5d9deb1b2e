/** The activities a host agent runs on its own task queue, built for one compute host. */
import type { LocalHost } from '../../config';
import { readHostFacts, type HostFacts } from './describe-host';

export type { HostFacts } from './describe-host';

export interface HostActivityDeps {
  host: LocalHost;
  searchPath: string;
}

export function createHostActivities({ host, searchPath }: HostActivityDeps) {
  return {
    async describeHost(): Promise<HostFacts> {
      return readHostFacts(host.name, host.libvirtUri, searchPath);
    },
  };
}

export type HostActivities = ReturnType<typeof createHostActivities>;
