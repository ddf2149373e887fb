// The htpasswd file is re-read on SIGHUP, in a real archway process: a user
// added works at once, a removed user or an old password stops working at
// once (remembered verdicts are dropped), and a broken file changes nothing.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { http } from '../harness/http.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

let work: string;
let htpasswd: string;
let proc: ArchwayProcess;

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const entries = (users: Record<string, string>) => `${Object.entries(users).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4)}`).join('\n')}\n`;
const status = async (user: string, password: string) => (await http(`${proc.url}/v2/`, { headers: { authorization: basic(user, password) } })).status;

async function sighup(expect: RegExp): Promise<void> {
  const offset = proc.output().length;
  proc.notify('SIGHUP');
  await proc.waitForOutput(expect, { fromOffset: offset });
}

before(async () => {
  work = await tempDir('archway-htpasswd-');
  htpasswd = join(work, 'htpasswd');
  await writeFile(htpasswd, entries({ alice: 'alice-1', bob: 'bob-1' }));
  proc = await startArchwayProcess({
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:9' } },
    defaultUpstream: 'docker.io',
    auth: { htpasswd },
  });
});
after(async () => {
  await proc?.kill();
  if (work) await removeDir(work);
});

describe('htpasswd reload on SIGHUP', () => {
  it('adds, removes and re-passwords users at once', async () => {
    assert.equal(await status('alice', 'alice-1'), 200);
    assert.equal(await status('bob', 'bob-1'), 200, 'bob verified (and remembered) before the change');
    assert.equal(await status('carol', 'carol-1'), 401);
    await writeFile(htpasswd, entries({ alice: 'alice-2', carol: 'carol-1' }));
    await sighup(/SIGHUP: reloaded htpasswd \(2 users\)/);
    assert.equal(await status('carol', 'carol-1'), 200, 'a new user works');
    assert.equal(await status('bob', 'bob-1'), 401, 'a removed user is refused, remembered verdict or not');
    assert.equal(await status('alice', 'alice-1'), 401, 'the old password is refused');
    assert.equal(await status('alice', 'alice-2'), 200, 'the new one works');
  });

  it('keeps the users in use when the new file cannot be read', async () => {
    await writeFile(htpasswd, 'this line is not an htpasswd entry\n');
    await sighup(/SIGHUP: reload failed; keeping what was in use/);
    assert.equal(await status('alice', 'alice-2'), 200);
    assert.equal(await status('carol', 'carol-1'), 200);
  });
});
