/**
 * The upstream's `Link: </v2/<repo>/tags/list?n=2&last=b>; rel="next"` names
 * the repository as the upstream knows it (`library/alpine`); the client must
 * get back the name it used (`alpine`). Absolute links to the upstream's host
 * are made relative, so the next page also comes through archway.
 */
export function rewriteLink(link: string, upstreamRepository: string, clientName: string, ns?: string): string {
  return link.replace(/<([^>]*)>/g, (_all, target: string) => {
    let path = target;
    const absolute = /^https?:\/\/[^/]+(\/.*)$/.exec(target);
    if (absolute) path = absolute[1] as string;
    const prefix = `/v2/${upstreamRepository}/`;
    if (path.startsWith(prefix)) path = `/v2/${clientName}/${path.slice(prefix.length)}`;
    // The next page must reach the same registry the client named with ?ns=.
    if (ns !== undefined) path += `${path.includes('?') ? '&' : '?'}ns=${encodeURIComponent(ns)}`;
    return `<${path}>`;
  });
}
