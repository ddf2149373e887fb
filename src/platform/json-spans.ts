/**
 * Byte ranges inside a JSON document, so that parts of it can be kept exactly
 * as written (whitespace, key order, escapes) while others are cut out. Works
 * on the raw bytes: every structural character is ASCII and no byte of a
 * multi-byte UTF-8 character is, so byte offsets are never confused.
 */
export interface Span {
  start: number;
  end: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;

const isSpace = (b: number | undefined) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;

class Scanner {
  constructor(
    private readonly bytes: Buffer,
    public at = 0,
  ) {}

  peek(): number | undefined {
    return this.bytes[this.at];
  }

  skipSpace(): void {
    while (isSpace(this.bytes[this.at])) this.at++;
  }

  expect(b: number): void {
    this.skipSpace();
    if (this.bytes[this.at] !== b) throw new Error(`JSON: expected "${String.fromCharCode(b)}" at byte ${this.at}`);
    this.at++;
  }

  /** Past one value (string, number, literal, object, array); returns its span. */
  skipValue(): Span {
    this.skipSpace();
    const start = this.at;
    const b = this.bytes[this.at];
    if (b === QUOTE) this.skipString();
    else if (b === OPEN_OBJECT || b === OPEN_ARRAY) this.skipNested();
    else {
      while (this.at < this.bytes.length && !isSpace(this.bytes[this.at]) && ![COMMA, CLOSE_OBJECT, CLOSE_ARRAY].includes(this.bytes[this.at] as number)) this.at++;
      if (this.at === start) throw new Error(`JSON: value expected at byte ${start}`);
    }
    return { start, end: this.at };
  }

  private skipString(): void {
    this.at++;
    while (this.at < this.bytes.length) {
      const b = this.bytes[this.at++];
      if (b === BACKSLASH) this.at++;
      else if (b === QUOTE) return;
    }
    throw new Error('JSON: unterminated string');
  }

  private skipNested(): void {
    let depth = 0;
    while (this.at < this.bytes.length) {
      const b = this.bytes[this.at];
      if (b === QUOTE) {
        this.skipString();
        continue;
      }
      this.at++;
      if (b === OPEN_OBJECT || b === OPEN_ARRAY) depth++;
      else if ((b === CLOSE_OBJECT || b === CLOSE_ARRAY) && --depth === 0) return;
    }
    throw new Error('JSON: unterminated object or array');
  }
}

/**
 * The spans of the elements of the array under `key` in the top-level object
 * of `bytes`, or undefined when there is no such array. A repeated key counts
 * as JSON.parse counts it: the last one.
 */
export function topLevelArrayElements(bytes: Buffer, key: string): Span[] | undefined {
  const s = new Scanner(bytes);
  s.expect(OPEN_OBJECT);
  let found: Span[] | undefined;
  s.skipSpace();
  if (s.peek() === CLOSE_OBJECT) return undefined;
  for (;;) {
    const keySpan = s.skipValue();
    const name: unknown = JSON.parse(bytes.subarray(keySpan.start, keySpan.end).toString('utf8'));
    s.expect(COLON);
    s.skipSpace();
    if (name === key && s.peek() === OPEN_ARRAY) found = elements(s);
    else {
      if (name === key) found = undefined;
      s.skipValue();
    }
    s.skipSpace();
    if (s.peek() === CLOSE_OBJECT) return found;
    s.expect(COMMA);
  }
}

function elements(s: Scanner): Span[] {
  const out: Span[] = [];
  s.expect(OPEN_ARRAY);
  s.skipSpace();
  if (s.peek() === CLOSE_ARRAY) {
    s.at++;
    return out;
  }
  for (;;) {
    out.push(s.skipValue());
    s.skipSpace();
    if (s.peek() === CLOSE_ARRAY) {
      s.at++;
      return out;
    }
    s.expect(COMMA);
  }
}
