// The documentation stays true to the tree: docs/architecture.md names every
// folder and top-level file of src/, names nothing that does not exist, and
// lists the layers in the order eslint.config.js enforces; and no relative
// link in the README or docs/ leads to a missing file or heading.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SRC = join(ROOT, 'src');
const ARCHITECTURE = join(ROOT, 'docs/architecture.md');

/** Every folder under src/ (nested ones too), as `src/<path>/`. */
function srcFolders(dir = SRC): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .flatMap((e) => {
      const path = join(dir, e.name);
      return [`${relative(ROOT, path)}/`, ...srcFolders(path)];
    });
}

/** Every file under src/, relative to the repository. */
function srcFiles(dir = SRC): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    return e.isDirectory() ? srcFiles(path) : [relative(ROOT, path)];
  });
}

/** Markdown without fenced code blocks (their text is not prose or links). */
function withoutFences(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
}

/** The inline code spans of a markdown text. */
function codeSpans(markdown: string): string[] {
  return [...withoutFences(markdown).matchAll(/`([^`\n]+)`/g)].map((m) => m[1] as string);
}

/**
 * eslint.config.js's LAYERS, read from its source (importing the config would
 * load eslint's plugins): each level is a list of entries side by side.
 */
function eslintLayers(): string[][] {
  const source = readFileSync(join(ROOT, 'eslint.config.js'), 'utf8');
  const body = /const LAYERS = \[([\s\S]*?)\n\];/.exec(source)?.[1];
  assert.ok(body, 'eslint.config.js declares `const LAYERS = [ … ];`');
  const levels: string[][] = [];
  // An entry is 'name' or ['name', 'name', …]; comments hold no quotes in this list.
  for (const m of body.matchAll(/\[([^\]]*)\]|'([^']+)'/g)) {
    levels.push(m[1] !== undefined ? [...m[1].matchAll(/'([^']+)'/g)].map((q) => q[1] as string) : [m[2] as string]);
  }
  return levels;
}

/** How the doc names a LAYERS entry: `src/<folder>/` or `<file>.ts` (optionally `src/<file>.ts`). */
function namesEntry(line: string, entry: string): boolean {
  const spans = [...line.matchAll(/`([^`]+)`/g)].map((m) => m[1]);
  return entry.endsWith('.ts') ? spans.some((s) => s === entry || s === `src/${entry}`) : spans.includes(`src/${entry}/`);
}

/** The items of the numbered list under `## Layers`, each as its first line. */
function layerItems(markdown: string): string[] {
  const section = /^## Layers\n([\s\S]*?)(?=^## )/m.exec(withoutFences(markdown))?.[1];
  assert.ok(section, 'docs/architecture.md has a "## Layers" section');
  return section.split('\n').filter((l) => /^\d+\. /.test(l));
}

/** GitHub's heading anchor: lower case, punctuation dropped, each space a hyphen. */
function githubSlug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // links and images: their text
    .replace(/<[^>]+>/g, '') // inline HTML
    .replace(/[`*]/g, ''); // code and emphasis marks
  return text
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

/** Every anchor a markdown file offers: its headings (with GitHub's -1, -2 for repeats) and explicit ids. */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const m of withoutFences(markdown).matchAll(/^#{1,6}[ \t]+(.+?)[ \t#]*$/gm)) {
    const slug = githubSlug(m[1] as string);
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    anchors.add(n === 0 ? slug : `${slug}-${n}`);
  }
  for (const m of markdown.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) anchors.add(m[1] as string);
  return anchors;
}

/** Relative link targets of a markdown file (inline links outside code), with their line. */
function relativeLinks(markdown: string): Array<{ target: string; line: number }> {
  const links: Array<{ target: string; line: number }> = [];
  let fence: string | undefined;
  markdown.split('\n').forEach((text, i) => {
    const opens = /^(```|~~~)/.exec(text)?.[1];
    if (opens) {
      fence = fence === undefined ? opens : fence === opens ? undefined : fence;
      return;
    }
    if (fence) return;
    const prose = text.replace(/`[^`]*`/g, '');
    for (const m of prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      const target = m[1] as string;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:
      links.push({ target, line: i + 1 });
    }
  });
  return links;
}

/** Which markdown files make up the documentation: the top-level ones, docs/ and deploy/. */
function documentationFiles(): string[] {
  const top = readdirSync(ROOT).filter((f) => f.endsWith('.md'));
  const under = (dir: string): string[] =>
    existsSync(join(ROOT, dir))
      ? readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
          e.isDirectory() ? under(join(dir, e.name)) : e.name.endsWith('.md') ? [join(dir, e.name)] : [],
        )
      : [];
  return [...top, ...under('docs'), ...under('deploy')];
}

/** Every relative link of these files whose file or anchor is missing, as `file:line → target (why)`. */
function brokenLinks(files: string[]): string[] {
  const broken: string[] = [];
  for (const file of files) {
    const markdown = readFileSync(join(ROOT, file), 'utf8');
    for (const { target, line } of relativeLinks(markdown)) {
      const [pathPart = '', anchor] = target.split('#', 2);
      const path = pathPart === '' ? join(ROOT, file) : resolve(dirname(join(ROOT, file)), decodeURIComponent(pathPart));
      const where = `${file}:${line} → ${target}`;
      if (!existsSync(path)) {
        broken.push(`${where} (no such file)`);
        continue;
      }
      if (anchor === undefined || anchor === '') continue;
      if (statSync(path).isDirectory() || !path.endsWith('.md')) {
        broken.push(`${where} (an anchor into something that is not a markdown file)`);
        continue;
      }
      if (!anchorsOf(readFileSync(path, 'utf8')).has(decodeURIComponent(anchor))) broken.push(`${where} (no such heading)`);
    }
  }
  return broken;
}

describe('docs/architecture.md', () => {
  const doc = readFileSync(ARCHITECTURE, 'utf8');
  const spans = new Set(codeSpans(doc));

  it('names every folder of src/ as `src/<name>/`', () => {
    const missing = srcFolders().filter((folder) => !spans.has(folder));
    assert.deepEqual(missing, [], `folders of src/ missing from docs/architecture.md: ${missing.join(', ')}`);
  });

  it('names every top-level file of src/ as `<name>.ts`', () => {
    const files = readdirSync(SRC).filter((f) => f.endsWith('.ts'));
    assert.ok(files.length > 0);
    const missing = files.filter((f) => !spans.has(f) && !spans.has(`src/${f}`));
    assert.deepEqual(missing, [], `top-level files of src/ missing from docs/architecture.md: ${missing.join(', ')}`);
  });

  it('names only folders and files that exist', () => {
    const files = srcFiles();
    const basenames = new Set(files.map((f) => f.split('/').pop()));
    const stale: string[] = [];
    for (const span of spans) {
      if (/^(src|test|bench|deploy|config)\//.test(span)) {
        // A path from the repository root: it must exist (a folder when it ends in /).
        if (!/^[\w./-]+$/.test(span)) continue; // a URL path like /v2/… or a pattern, not a file
        const path = join(ROOT, span);
        if (!existsSync(path) || (span.endsWith('/') && !statSync(path).isDirectory())) stale.push(span);
      } else if (/^[\w-]+(\/[\w-]+)*\.ts$/.test(span)) {
        // `file.ts` or `folder/file.ts`: a file of src/ by that name or path.
        if (span.includes('/') ? !files.includes(`src/${span}`) : !basenames.has(span)) stale.push(span);
      }
    }
    assert.deepEqual(stale, [], `named in docs/architecture.md but not in the tree: ${stale.join(', ')}`);
  });

  it("lists eslint.config.js's LAYERS in the same order, entries side by side on one line", () => {
    const levels = eslintLayers();
    assert.ok(levels.length >= 10, `LAYERS parsed: ${JSON.stringify(levels)}`);
    const items = layerItems(doc);
    let previous = -1;
    for (const level of levels) {
      const at = level.map((entry) => items.findIndex((line) => namesEntry(line, entry)));
      for (const [i, entry] of level.entries()) assert.notEqual(at[i], -1, `LAYERS entry ${entry} is not a line of the "## Layers" list`);
      assert.ok(
        at.every((n) => n === at[0]),
        `entries side by side (${level.join(', ')}) are one line of the "## Layers" list`,
      );
      assert.ok((at[0] as number) > previous, `${level.join(' + ')} comes after the layer before it in the "## Layers" list`);
      previous = at[0] as number;
    }
    assert.equal(items.length, levels.length, 'the "## Layers" list has one line per LAYERS level, no more');
  });
});

describe('links in the documentation', () => {
  it('GitHub slugs as GitHub makes them', () => {
    assert.equal(githubSlug('Capacity, from the measured figures'), 'capacity-from-the-measured-figures');
    assert.equal(githubSlug("Inspecting an image's platforms"), 'inspecting-an-images-platforms');
    assert.equal(githubSlug('Who may pull: authentication, limits, TLS'), 'who-may-pull-authentication-limits-tls');
    assert.equal(githubSlug('Hostile input — `test/e2e/hostile.test.ts` (in `npm test`)'), 'hostile-input--teste2ehostiletestts-in-npm-test');
    assert.equal(githubSlug('1. Warm blob throughput: 8 clients, cached 64 MiB blob (wrk)'), '1-warm-blob-throughput-8-clients-cached-64-mib-blob-wrk');
  });

  it('finds a link to a missing file or heading (the check can fail)', () => {
    const markdown = '# Title\n\n## A section\n\n[ok](#a-section) [gone](#no-section) [file](missing.md) `[code](nothing.md)`\n\n```\n[fenced](nowhere.md)\n```\n';
    const anchors = anchorsOf(markdown);
    const links = relativeLinks(markdown).map((l) => l.target);
    assert.deepEqual(links, ['#a-section', '#no-section', 'missing.md']);
    assert.ok(anchors.has('a-section') && !anchors.has('no-section'));
  });

  it('no relative link in README.md, docs/ and the other markdown files leads to a missing file or heading', () => {
    const files = documentationFiles();
    assert.ok(files.includes('README.md') && files.includes('docs/architecture.md'), `files checked: ${files.join(', ')}`);
    const broken = brokenLinks(files);
    assert.deepEqual(broken, [], `broken links:\n${broken.join('\n')}`);
  });
});
