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

/**
 * The spec's link to the next page of a tag list archway pages itself (a
 * virtual image's): relative, so it comes back through archway, with the
 * client's n and ?ns= kept.
 */
export function nextPageLink(clientName: string, next: { n: number; last: string }, ns?: string): string {
  const nsParam = ns === undefined ? '' : `&ns=${encodeURIComponent(ns)}`;
  return `</v2/${clientName}/tags/list?n=${next.n}&last=${encodeURIComponent(next.last)}${nsParam}>; rel="next"`;
}
