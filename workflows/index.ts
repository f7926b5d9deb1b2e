/** Every workflow the control worker registers. */
export { probeHosts } from './probe-hosts';
