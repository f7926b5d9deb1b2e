/**
 * A child process for the "killed in the middle of a write" test: it uploads a 10 MB archive to
 * the embedded image service in VTPM_IMAGE_SERVICE_DIR slowly, announcing itself once bytes are
 * flowing, and waits to be killed. Not a test file: the test spawns it.
 */
import { loadConfig } from '../../config';
import { createImageService } from '../../activities/image-service/image-service';

async function main(): Promise<void> {
  const [instanceUuid, sha256] = process.argv.slice(2);
  const images = createImageService(loadConfig(process.env));
  let sent = 0;
  async function* slowly(): AsyncGenerator<Buffer> {
    for (;;) {
      yield Buffer.alloc(64 * 1024, sent % 251);
      sent += 1;
      if (sent === 8) process.stdout.write('writing\n');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  await images.upload(
    { project: 'vtpm-test-a', instanceUuid: instanceUuid!, generation: 1, kind: 'shelve', sha256: sha256!, size: 10 * 1024 * 1024 },
    slowly(),
  );
}

void main();
