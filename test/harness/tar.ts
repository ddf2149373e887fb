// Minimal ustar writer and reader. Test images need real tar layers because
// dockerd and containerd extract them and check rootfs.diff_ids; and reading
// `docker save` output lets us inspect pulled images without `docker run`.
import { gunzipSync } from 'node:zlib';

const BLOCK = 512;
/** Fixed timestamp so identical inputs give identical (digest-stable) layers. */
const MTIME = 1_700_000_000;

export type TarEntry =
  | { type: 'dir'; name: string; mode?: number }
  | { type: 'file'; name: string; data: Buffer; mode?: number };

function writeString(header: Buffer, value: string, offset: number, length: number): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > length) throw new Error(`tar: "${value}" does not fit in ${length} bytes`);
  bytes.copy(header, offset);
}

/** Octal number, zero padded, NUL terminated: the classic ustar encoding. */
function writeOctal(header: Buffer, value: number, offset: number, length: number): void {
  const digits = value.toString(8).padStart(length - 1, '0');
  if (digits.length > length - 1) throw new Error(`tar: ${value} does not fit in ${length} bytes`);
  writeString(header, `${digits}\0`, offset, length);
}

function header(entry: TarEntry): Buffer {
  const h = Buffer.alloc(BLOCK);
  const name = entry.type === 'dir' && !entry.name.endsWith('/') ? `${entry.name}/` : entry.name;
  writeString(h, name, 0, 100);
  writeOctal(h, entry.mode ?? (entry.type === 'dir' ? 0o755 : 0o644), 100, 8);
  writeOctal(h, 0, 108, 8); // uid
  writeOctal(h, 0, 116, 8); // gid
  writeOctal(h, entry.type === 'file' ? entry.data.length : 0, 124, 12);
  writeOctal(h, MTIME, 136, 12);
  h.fill(' ', 148, 156); // checksum is computed with its own field as spaces
  writeString(h, entry.type === 'dir' ? '5' : '0', 156, 1);
  writeString(h, 'ustar\0', 257, 6);
  writeString(h, '00', 263, 2);
  writeString(h, 'root', 265, 32);
  writeString(h, 'root', 297, 32);
  let sum = 0;
  for (const byte of h) sum += byte;
  writeString(h, `${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return h;
}

function padding(size: number): Buffer {
  const rest = size % BLOCK;
  return Buffer.alloc(rest === 0 ? 0 : BLOCK - rest);
}

/** Serializes entries into an uncompressed tar archive (names must be < 100 bytes). */
export function writeTar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(header(entry));
    if (entry.type === 'file') parts.push(entry.data, padding(entry.data.length));
  }
  parts.push(Buffer.alloc(BLOCK * 2)); // end-of-archive marker
  return Buffer.concat(parts);
}

export interface ReadEntry {
  /** Path without a leading "./" or "/". */
  name: string;
  /** ustar type flag: '0' file, '5' dir, '2' symlink, ... */
  type: string;
  data: Buffer;
  /** Target of symlinks and hard links. */
  linkName: string;
}

function readString(buf: Buffer, offset: number, length: number): string {
  const raw = buf.subarray(offset, offset + length);
  const end = raw.indexOf(0);
  return raw.subarray(0, end === -1 ? raw.length : end).toString('utf8');
}

function readNumber(buf: Buffer, offset: number, length: number): number {
  const first = buf[offset] ?? 0;
  if (first & 0x80) {
    // GNU base-256 encoding for large sizes.
    let value = 0;
    for (let i = 1; i < length; i++) value = value * 256 + (buf[offset + i] ?? 0);
    return value;
  }
  const text = readString(buf, offset, length).trim();
  return text === '' ? 0 : parseInt(text, 8);
}

/** PAX extended header records: "LEN key=value\n". */
function parsePax(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space === -1) break;
    const len = parseInt(data.subarray(pos, space).toString('utf8'), 10);
    if (!Number.isFinite(len) || len <= 0) break;
    const record = data.subarray(space + 1, pos + len - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0) out.set(record.slice(0, eq), record.slice(eq + 1));
    pos += len;
  }
  return out;
}

function normalize(name: string): string {
  return name.replace(/^\.\//, '').replace(/^\/+/, '');
}

/** Decompresses gzip if the buffer starts with the gzip magic bytes. */
export function maybeGunzip(buf: Buffer): Buffer {
  return buf[0] === 0x1f && buf[1] === 0x8b ? gunzipSync(buf) : buf;
}

/** Reads every entry of a tar archive (ustar, PAX and GNU long names). */
export function readTar(archive: Buffer): ReadEntry[] {
  const entries: ReadEntry[] = [];
  let pos = 0;
  let paxPath: string | undefined;
  let longName: string | undefined;
  while (pos + BLOCK <= archive.length) {
    const h = archive.subarray(pos, pos + BLOCK);
    if (h.every((b) => b === 0)) break;
    const size = readNumber(h, 124, 12);
    const type = readString(h, 156, 1) || '0';
    const data = archive.subarray(pos + BLOCK, pos + BLOCK + size);
    pos += BLOCK + size + padding(size).length;
    if (type === 'x') {
      paxPath = parsePax(data).get('path');
      continue;
    }
    if (type === 'g') continue;
    if (type === 'L') {
      longName = readString(data, 0, data.length);
      continue;
    }
    const prefix = readString(h, 345, 155);
    const plain = prefix ? `${prefix}/${readString(h, 0, 100)}` : readString(h, 0, 100);
    const name = normalize(paxPath ?? longName ?? plain);
    paxPath = undefined;
    longName = undefined;
    entries.push({ name: name.replace(/\/$/, ''), type, data, linkName: readString(h, 157, 100) });
  }
  return entries;
}
