// s3rver's command line, with objects written the way S3 makes them visible:
// all at once. s3rver 3.7 writes an object (a PUT, or the concatenation of a
// completed multipart upload) in place, so a HEAD or GET while it is being
// written sees the bytes so far: a partial object under its final key, which
// S3 (and MinIO, Ceph) never shows ("Amazon S3 never adds partial objects").
// Here the object is written to a temp file next to it (not an object name:
// listings skip it) and renamed into place once complete, after its md5 and
// metadata. Everything else is s3rver's own code.
'use strict';

const { randomUUID } = require('node:crypto');
const { createRequire } = require('node:module');
const { dirname, join } = require('node:path');

const s3rverDir = dirname(require.resolve('s3rver/package.json'));
const fromS3rver = createRequire(join(s3rverDir, 'package.json'));
const crypto = fromS3rver('crypto');
const fs = fromS3rver('fs-extra');
const { Transform } = fromS3rver('stream');
const FilesystemStore = fromS3rver('./lib/stores/filesystem.js');

FilesystemStore.prototype.putObject = async function putObject(object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  const partialPath = `${objectPath}.${randomUUID()}.partial`;
  await fs.mkdirp(dirname(objectPath));
  try {
    const [size, md5] = await new Promise((resolve, reject) => {
      const writeStream = fs.createWriteStream(partialPath);
      const md5Context = crypto.createHash('md5');
      let totalLength = 0;
      writeStream.on('error', reject);
      // Resolved when the file is closed (s3rver resolves at the end of its input, before the file is written).
      writeStream.on('close', () => resolve([totalLength, md5Context.digest('hex')]));
      if (Buffer.isBuffer(object.content)) {
        md5Context.update(object.content);
        totalLength = object.content.length;
        writeStream.end(object.content);
        return;
      }
      object.content
        .on('error', reject)
        .pipe(
          new Transform({
            transform(chunk, encoding, callback) {
              md5Context.update(chunk, encoding);
              totalLength += chunk.length;
              callback(null, chunk);
            },
          }),
        )
        .on('error', reject)
        .pipe(writeStream);
    });
    await this.putMetadata(object.bucket, object.key, object.metadata, md5);
    await fs.rename(partialPath, objectPath);
    return { size, md5 };
  } catch (err) {
    await fs.remove(partialPath).catch(() => undefined);
    throw err;
  }
};

require(join(s3rverDir, 'bin', 's3rver.js'));
