/**
 * `npx tsx scripts/render-temporal-config.ts`: writes the docker-compose deployment's Temporal
 * server configuration (deploy/temporal/config/docker.yaml) from the function the local cluster's
 * configurations come from (scripts/stack/cluster.ts). test/unit/cluster-config.test.ts fails when
 * the committed file is not that rendering.
 */
import fs from 'node:fs';
import path from 'node:path';
import { composeServerConfig, serverConfigText } from './stack/cluster';

const file = path.resolve(__dirname, '../deploy/temporal/config/docker.yaml');
fs.mkdirSync(path.dirname(file), { recursive: true });
fs.writeFileSync(file, serverConfigText(composeServerConfig()));
console.log(`wrote ${path.relative(process.cwd(), file)}`);
