/**
 * WWW-Authenticate parsing (RFC 7235), for the challenges registries send:
 *   Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"
 *   Basic realm="Registry Realm"
 * A header may carry several challenges; quoted strings may hold commas and escaped quotes.
 */
export interface Challenge {
  scheme: string; // lower-cased: 'bearer', 'basic'
  params: Record<string, string>; // keys lower-cased
}

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const headers = Array.isArray(header) ? header : [header];
  return headers.flatMap(parseOne);
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/;

function parseOne(input: string): Challenge[] {
  const challenges: Challenge[] = [];
  let s = input;
  let current: Challenge | undefined;
  while (s.length) {
    s = s.replace(/^[\s,]+/, '');
    const name = TOKEN.exec(s)?.[0];
    if (!name) break;
    s = s.slice(name.length);
    const afterWs = s.replace(/^\s+/, '');
    if (afterWs.startsWith('=') && current) {
      // auth-param: name = token | quoted-string
      s = afterWs.slice(1).replace(/^\s+/, '');
      let value: string;
      if (s.startsWith('"')) {
        let i = 1;
        value = '';
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          value += s[i];
          i++;
        }
        s = s.slice(i + 1);
      } else {
        value = /^[^,\s]*/.exec(s)?.[0] ?? '';
        s = s.slice(value.length);
      }
      // defineProperty, not assignment: a parameter called __proto__ is data, not a prototype.
      Object.defineProperty(current.params, name.toLowerCase(), { value, enumerable: true, writable: true, configurable: true });
    } else {
      // A new challenge: scheme followed by params (or a token68 we ignore).
      current = { scheme: name.toLowerCase(), params: {} };
      challenges.push(current);
      s = afterWs;
    }
  }
  return challenges;
}
