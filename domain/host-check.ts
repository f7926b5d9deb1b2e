/**
 * Whether a host can take a request. Kept apart from the capability
 * computation so workflow code can use it without loading the XML parser.
 */
import { HostLacksTraits } from './errors';
import type { HostCapabilities } from './host-capabilities';

/** The required traits the host lacks, each with every reason that applies to it. */
export function hostMissingTraits(
  capabilities: HostCapabilities,
  requiredTraits: readonly string[],
): { trait: string; reasons: string[] }[] {
  const hostWide = capabilities.missing.filter((m) => m.trait === undefined).map((m) => m.reason);
  return [...new Set(requiredTraits)]
    .filter((trait) => !capabilities.traits.includes(trait))
    .map((trait) => {
      const own = capabilities.missing.filter((m) => m.trait === trait).map((m) => m.reason);
      const reasons = [...hostWide, ...own];
      return { trait, reasons: reasons.length > 0 ? reasons : ['the host does not report this trait'] };
    });
}

/** Throws HostLacksTraits naming the host, the missing traits and why, unless the host provides them all. */
export function checkHostProvides(capabilities: HostCapabilities, requiredTraits: readonly string[]): void {
  const missing = hostMissingTraits(capabilities, requiredTraits);
  if (missing.length > 0) throw new HostLacksTraits(capabilities.host, missing);
}
