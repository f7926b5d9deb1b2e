import path from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../config';
import { thrownBy } from './helpers';

const keystoneEnv = {
  VTPM_BARBICAN_AUTH: 'keystone',
  VTPM_KEYSTONE_URL: 'https://keystone.example:5000/v3',
  VTPM_KEYSTONE_USER: 'vtpm-engine',
  VTPM_KEYSTONE_PASSWORD: 'correct horse battery staple',
  VTPM_KEYSTONE_PROJECT: 'service',
};

describe('key manager and image service configuration', () => {
  it('defaults to the embedded stores under the data folder, and unauthenticated OpenStack', () => {
    const config = loadConfig({ VTPM_DATA_DIR: '/srv/vtpm' });
    expect(config.keyManager).toEqual({
      kind: 'embedded',
      embeddedDir: '/srv/vtpm/keys',
      masterKeyFile: '/srv/vtpm/keys/master.key',
    });
    expect(config.imageService).toEqual({ kind: 'embedded', embeddedDir: '/srv/vtpm/images' });
    expect(config.barbican.auth).toBe('none');
    expect(config.glance.auth).toBe('none');
    expect(config.keystone).toBeNull();
    expect(config.openStackTimeoutMs).toBe(30_000);
  });

  it('selects Barbican and Glance, and places the embedded stores where told', () => {
    const config = loadConfig({
      VTPM_DATA_DIR: '/srv/vtpm',
      VTPM_KEY_MANAGER: 'barbican',
      VTPM_IMAGE_SERVICE: 'glance',
      VTPM_KEY_MANAGER_DIR: 'secrets',
      VTPM_KEY_MANAGER_MASTER_KEY: '/etc/vtpm/master.key',
      VTPM_IMAGE_SERVICE_DIR: '/var/lib/vtpm-images',
    });
    expect(config.keyManager).toEqual({ kind: 'barbican', embeddedDir: path.join('/srv/vtpm', 'secrets'), masterKeyFile: '/etc/vtpm/master.key' });
    expect(config.imageService).toEqual({ kind: 'glance', embeddedDir: '/var/lib/vtpm-images' });
  });

  it.each([
    ['VTPM_KEY_MANAGER', 'vault', /VTPM_KEY_MANAGER: 'vault' is not one of embedded, barbican/],
    ['VTPM_IMAGE_SERVICE', 's3', /VTPM_IMAGE_SERVICE: 's3' is not one of embedded, glance/],
    ['VTPM_BARBICAN_AUTH', 'token', /VTPM_BARBICAN_AUTH: 'token' is not one of none, keystone/],
    ['VTPM_GLANCE_AUTH', 'yes', /VTPM_GLANCE_AUTH/],
    ['VTPM_OPENSTACK_TIMEOUT_MS', '0', /VTPM_OPENSTACK_TIMEOUT_MS: '0' is not a positive integer/],
  ])('refuses %s=%s with a ConfigError naming the variable', (key, value, message) => {
    const err = thrownBy(() => loadConfig({ [key]: value }));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toMatchObject({ setting: key });
    expect(err.message).toMatch(message);
  });

  it('reads the Keystone settings when a service authenticates with Keystone', () => {
    const config = loadConfig(keystoneEnv);
    expect(config.barbican.auth).toBe('keystone');
    expect(config.keystone).toMatchObject({
      url: 'https://keystone.example:5000',
      username: 'vtpm-engine',
      userDomain: 'Default',
      project: 'service',
      projectDomain: 'Default',
    });
    expect(config.keystone?.password.reveal()).toBe('correct horse battery staple');
  });

  it.each(['VTPM_KEYSTONE_URL', 'VTPM_KEYSTONE_USER', 'VTPM_KEYSTONE_PASSWORD', 'VTPM_KEYSTONE_PROJECT'])(
    'names %s when Keystone authentication is chosen without it',
    (missing) => {
      const err = thrownBy(() => loadConfig({ ...keystoneEnv, [missing]: '' }));
      expect(err).toMatchObject({ name: 'ConfigError', setting: missing });
      expect(err.message).toContain('because VTPM_BARBICAN_AUTH = keystone');
    },
  );

  it('never shows the Keystone password when the configuration is printed or serialised', () => {
    const config = loadConfig({ ...keystoneEnv, VTPM_GLANCE_AUTH: 'keystone' });
    for (const shown of [JSON.stringify(config), inspect(config, { depth: 10 }), String(config.keystone?.password), `${config.keystone?.password}`]) {
      expect(shown).not.toContain('battery');
    }
    expect(JSON.stringify(config)).toContain('[redacted]');
  });
});
