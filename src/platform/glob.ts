/**
 * Repository globs as operators write them: `*` is one path segment's worth
 * of characters, `**` any number of segments, `?` one character.
 * `library/*` matches `library/alpine`, not `library/a/b`; `ghcr.io/org/**` matches everything under it.
 */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}
