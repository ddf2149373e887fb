import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

/**
 * The status page: one self-contained HTML document (no external assets, no
 * framework) that reads /_archway/status and /_archway/cache with the admin
 * token and redraws every few seconds. The token comes from the URL fragment
 * (`/_archway/#token=…`, never sent to a server) or a form, and is kept in
 * sessionStorage for the tab's life. No inline style attributes: the
 * Content-Security-Policy allows only the one <style> and the one <script>
 * below, by hash (statusPage()). The document is status-page.html beside
 * this file, served as it is (the build copies it next to the compiled code).
 */

export interface StatusPage {
  html: string;
  /** Headers of the page's answer: its Content-Security-Policy and the rest of what keeps it from being framed or leaking. */
  headers: Record<string, string>;
}

/**
 * The page with its Content-Security-Policy, computed once (at start): nothing
 * from elsewhere, no plugin, no frame, no form target; the page's own inline
 * <style> and <script> run because their hashes are listed, and nothing else
 * inline would (an injected tag, or an upstream's manifest someone got a
 * browser to render on this origin, where the admin token lives).
 */
export function statusPage(): StatusPage {
  const html = readFileSync(new URL('./status-page.html', import.meta.url), 'utf8');
  const hash = (tag: 'style' | 'script') => {
    const found = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(html);
    if (!found?.[1]) throw new Error(`status page without a <${tag}>`);
    return `'sha256-${createHash('sha256').update(found[1], 'utf8').digest('base64')}'`;
  };
  const csp = [
    "default-src 'none'",
    `script-src ${hash('script')}`,
    `style-src ${hash('style')}`,
    // The favicon is an empty data: URL (no request for /favicon.ico).
    'img-src data:',
    // fetch() of /_archway/status and /_archway/cache.
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return {
    html,
    headers: { 'content-security-policy': csp, 'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer' },
  };
}
