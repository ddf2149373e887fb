// The LocalStore contract on the filesystem (the bucket's run is in test/e2e/s3-local-store.test.ts).
import { FsLocalStore } from '../../src/store/local-store.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';
import { localStoreContract } from '../store/local-store.contract.ts';

localStoreContract('filesystem', async () => {
  const dir = await tempDir('archway-local-store-');
  const store = new FsLocalStore(dir);
  await store.init();
  return {
    store,
    reopen: async () => {
      const again = new FsLocalStore(dir);
      await again.init();
      return again;
    },
    cleanup: () => removeDir(dir),
  };
});
