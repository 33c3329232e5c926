"""Page synthesis: sites, `<img>` tags with at most one fault each, and whole HTML pages with
the link metadata ia-web-commons would extract from them.

Knows nothing of WARC or WAT: `FileGen.page` returns the HTML, its `HTML-Metadata` and the
per-image truth; `warcwrite.Writer` turns that into records.
"""

from __future__ import annotations

import base64
import html
import math
import random
from bisect import bisect_left
from fractions import Fraction
from itertools import accumulate
from typing import Any
from urllib.parse import quote, urljoin

from crawlpairs.generate.rand import ch, ri, seed_int
from crawlpairs.generate.truth import (
    DROP_EXTENSIONS,
    MAX_DOMAIN_LENGTH,
    MAX_URL_LENGTH,
    clean_text,
    escape,
    url_extension,
)
from crawlpairs.generate.vocab import (
    CDNS,
    DOMAIN_CUM,
    DOMAINS,
    ENTITY_MAP,
    ENTITY_RE,
    JS_SRCS,
    LAZY_PLACEHOLDERS,
    LICENSES,
    POWERED,
    SERVERS,
    SHARES,
    SHORT_ALTS,
    Corpus,
)

# Single-fault mix of <img> tags (weights); ~55% carry a non-empty alt attribute, None = a surviving pair.
SLOT_WEIGHTS: dict[str | None, float] = {
    None: 32.0,
    "no_alt": 34.0,
    "empty_alt": 10.0,
    "text_too_short": 5.0,
    "text_too_long": 0.15,
    "scheme": 6.0,
    "extension": 8.0,
    "url_too_long": 1.0,
    "domain_too_long": 1.0,
}


class Site:
    """Per-domain structure (navigation, footer, scripts) shared by all its pages, in every crawl."""

    __slots__ = (
        "domain",
        "name",
        "scheme",
        "www",
        "server",
        "powered",
        "nav",
        "nav_links",
        "footer",
        "footer_links",
        "scripts",
        "css",
        "lang",
        "img_host",
        "upload_dir",
        "template",
        "license",
        "head_license",
        "text",
        "slugs",
    )

    def __init__(self, domain: str, corpus: Corpus) -> None:
        rng = random.Random(seed_int("site", domain))
        self.domain = domain
        label = domain.split(".")[0].replace("-", " ")
        self.name = label.title()
        self.scheme = "https" if rng.random() < 0.8 else "http"
        self.www = "www." if rng.random() < 0.5 else ""
        self.server = ch(rng, SERVERS)
        self.powered = ch(rng, POWERED)
        self.lang = ch(rng, ["en"] * 6 + ["de", "fr", "es", "it", "pt", "nl", "pl", "ru", "ja", "zh", "tr"])
        self.template = ch(rng, ["blog", "blog", "shop", "gallery", "news"])
        r = rng.random()
        self.img_host = (
            (self.www + domain)
            if r < 0.55
            else ("cdn." + domain if r < 0.75 else ("static." + domain if r < 0.82 else ch(rng, CDNS)))
        )
        self.upload_dir = f"/wp-content/uploads/{ri(rng, 2012, 2024)}/{ri(rng, 1, 12):02d}/"
        lic = rng.random()
        self.license = LICENSES[int(rng.random() * len(LICENSES))] if lic < 0.12 else None
        self.head_license = self.license is not None and rng.random() < 0.4
        base = f"{self.scheme}://{self.www}{domain}"
        # a site talks about a few things: its own small vocabulary, used for link texts and slugs
        vocab = corpus.words(rng, 300, 900).split(" ")
        self.text = " ".join(rng.choices(vocab, k=300)) + " "
        slug_of = corpus.ascii_slug
        sl = [x for x in (slug_of.get(w, "") for w in vocab) if len(x) >= 2] or ["page"]
        self.slugs = "-".join(rng.choices(sl, k=250)) + "-"
        # navigation
        nav_parts = ['<nav class="main-nav"><ul>']
        links: list[dict] = []
        section = ch(rng, ["category", "collections", "topics", "c", "shop", "blog/category"])
        r = rng.random()
        n_nav = ri(rng, 5, 15) if r < 0.15 else (ri(rng, 15, 60) if r < 0.6 else ri(rng, 60, 220))
        parents = [self.slug(rng, 3, 16) for _ in range(ri(rng, 4, 12))]
        absolute = rng.random() < 0.3  # some CMSs write every link absolute
        for _ in range(n_nav):
            w = self.words(rng, 4, 24) or "Home"
            slug = f"/{section}/{ch(rng, parents)}/{self.slug(rng, 3, 24)}/"
            url = base + slug if absolute else slug
            nav_parts.append(f'<li class="menu-item"><a href="{url}">{w}</a></li>')
            links.append({"path": "A@/href", "url": url, "text": w})
        nav_parts.append("</ul></nav>")
        self.nav = "".join(nav_parts)
        self.nav_links = links
        # footer
        fparts = ['<footer class="site-footer"><div class="widgets">']
        flinks: list[dict] = []
        for _ in range(ri(rng, 8, 30)):
            w = self.words(rng, 4, 40) or "About"
            url = f"/{self.slug(rng, 3, 30)}.html" if rng.random() < 0.6 else f"https://{ch(rng, DOMAINS)}/"
            title = self.words(rng, 4, 20) if rng.random() < 0.2 else None
            if title:
                fparts.append(f'<a href="{url}" title="{title}">{w}</a> ')
                flinks.append({"path": "A@/href", "url": url, "title": title, "text": w})
            else:
                fparts.append(f'<a href="{url}">{w}</a> ')
                flinks.append({"path": "A@/href", "url": url, "text": w})
        fparts.append("</div>")
        self.footer = "".join(fparts)
        self.footer_links = flinks
        self.scripts = [
            {
                "path": "SCRIPT@/src",
                "url": f"/static/js/{corpus.slug(rng)}.min.js?ver={ri(rng, 1, 9)}.{ri(rng, 0, 9)}",
                "type": "text/javascript",
            }
            for _ in range(ri(rng, 0, 4))
        ]
        self.css = f"/static/css/style.{rng.getrandbits(32):08x}.css"

    def words(self, rng: random.Random, lo: int, hi: int) -> str:
        """Words of the site's own small vocabulary, so its link texts repeat like a real site's."""
        return Corpus.cut(self.text, " ", rng, lo, hi)

    def slug(self, rng: random.Random, lo: int = 6, hi: int = 36) -> str:
        """A URL slug from the site's vocabulary."""
        return Corpus.cut(self.slugs, "-", rng, lo, hi)


class Img:
    """One <img> tag as written, with its ground truth."""

    __slots__ = (
        "src",
        "alt",
        "title",
        "data_src",
        "srcset",
        "fault",
        "url",
        "text",
        "title_text",
        "fig_text",
        "lazy_url",
        "shared",
        "dup",
        "image_rel",
        "wrap_link",
        "noise",
        "caption",
    )

    def __init__(self) -> None:
        self.src = ""
        self.alt: str | None = None
        self.title: str | None = None
        self.data_src: str | None = None
        self.srcset: str | None = None
        self.fault: str | None = None
        self.url: str | None = None
        self.text: str | None = None
        self.title_text: str | None = None
        self.fig_text: str | None = None
        self.lazy_url: str | None = None
        self.shared = False
        self.dup = False
        self.image_rel: str | None = None
        self.wrap_link: str | None = None
        self.noise: str | None = None
        self.caption: str | None = None


# A pair reused from an earlier crawl: (url, text, alt as written, noise kind, caption before noise)
SharedPair = tuple[str, str, str, str | None, str | None]


class FileGen:
    """The pages of one file, drawn from one rng seeded by (seed, crawl, file index) only, so a file
    is the same whichever files, processes or earlier runs came before it."""

    def __init__(
        self,
        *,
        idx: int,
        crawl: str,
        seed: int,
        captions: list[str],
        corpus: Corpus,
        shared_slice: list[SharedPair] | None,
        shared_fraction: Fraction,
        avoid: set[tuple[str, str]] | None,
        image_base_url: str | None,
        dup_rate: float,
        sites: dict[str, Site],
    ) -> None:
        self.idx = idx
        self.rng = random.Random(seed_int("file", seed, crawl, idx))
        self.captions = captions
        self.corpus = corpus
        self.shared_slice = shared_slice or []
        self.shared_pos = 0
        self.shared_fraction = shared_fraction
        self.avoid = avoid or set()
        self.image_base_url = image_base_url.rstrip("/") if image_base_url else None
        self.dup_rate = dup_rate
        self.sites = sites
        self.new_pairs = 0  # distinct surviving pairs issued by this file
        self.shared_used = 0
        self.issued: list[tuple[str, str]] = []  # (url, alt_raw) of surviving pairs, for duplicates
        self.alt_info: dict[str, tuple[str | None, str | None]] = {}  # alt_raw -> (noise, caption)
        self.issued_set: set[tuple[str, str]] = set()
        weights = dict(SLOT_WEIGHTS)
        if self.image_base_url:
            weights.pop("domain_too_long")
        self.slot_kinds = list(weights)
        self.slot_cum = list(accumulate(weights.values()))

    # ---- texts

    def caption(self) -> str:
        """A real caption, recombined from two 45% of the time so texts repeat less than the pool."""
        rng = self.rng
        a = ch(rng, self.captions)
        if rng.random() < 0.45:
            b = ch(rng, self.captions)
            wa, wb = a.split(" "), b.split(" ")
            if len(wa) > 2 and len(wb) > 2:
                mixed = " ".join(wa[: max(2, len(wa) // 2)] + wb[len(wb) // 2 :])
                if len(mixed) >= 8:  # keep every good caption clear of the length limits
                    a = mixed
        return a

    def alt_raw(self, text: str) -> str:
        """The attribute source for a good caption, with realistic noise that cleanup removes.

        Records (noise kind, caption) for the raw string in `alt_info`, for the truth table.
        """
        raw, noise, text = self._noisy(text)
        self.alt_info[raw] = (noise, text)
        return raw

    def _noisy(self, text: str) -> tuple[str, str | None, str]:
        rng = self.rng
        r = rng.random()
        if r < 0.06:  # named / numeric entities
            esc = escape(text)
            if ENTITY_RE.search(esc):
                return ENTITY_RE.sub(lambda m: ENTITY_MAP[m.group(0)], esc), "entities", text
            out = esc.encode("ascii", "xmlcharrefreplace").decode("ascii")
            return out, ("entities" if "&" in out else None), text
        if r < 0.09:  # mojibake (UTF-8 read as cp1252), kept in `text`: ftfy may repair it
            if text.isascii():  # typographic punctuation first, as CMSs do, so there is something to break
                text = text.replace("'", "\u2019").replace(" - ", " \u2014 ")
                if text.isascii():
                    text += " \u2013 photo"
            try:
                moj = text.encode("utf-8").decode("cp1252")
            except UnicodeDecodeError:
                return escape(text), None, text
            return escape(moj), "mojibake", text
        if r < 0.11:  # control characters / zero-width spaces inside
            pos = rng.randrange(1, len(text))
            ctrl = ch(rng, ["\x07", "\x0b", "\u200b", "\x1b", "\x7f"])
            return escape(text[:pos] + ctrl + text[pos:]), "control", text
        if r < 0.15:  # stray whitespace and newlines
            return escape("\n  " + text.replace(" ", "  ", 1) + "  "), "whitespace", text
        return escape(text), None, text

    # ---- URLs

    def image_path(self, site: Site, ext: str) -> str:
        """A path in one of the shapes CMSs use (uploads, images, sized assets, a PHP endpoint)."""
        rng = self.rng
        stem = self.corpus.slug(rng, 6, 50) + f"-{rng.getrandbits(40):010x}"
        if ext == "":
            return f"/media/image.php?id={rng.getrandbits(40)}"
        r = rng.random()
        if r < 0.4:
            path = f"{site.upload_dir}{stem}.{ext}"
        elif r < 0.7:
            path = f"/images/{stem}.{ext}"
        else:
            path = f"/assets/img/{rng.getrandbits(16):04x}/{stem}-{ch(rng, [300, 640, 800, 1024])}x{ch(rng, [200, 480, 600])}.{ext}"
        if rng.random() < 0.1 and ext in ("jpg", "jpeg", "png", "webp"):
            path += f"?w={ch(rng, [320, 640, 1080])}&amp;q={ri(rng, 60, 95)}"
        return path

    def pick_ext(self) -> str:
        """A raster extension (or none) in roughly the web's mix; svg/gif only come as a fault."""
        r = self.rng.random()
        if r < 0.62:
            return "jpg"
        if r < 0.8:
            return "png"
        if r < 0.9:
            return "webp"
        if r < 0.95:
            return "jpeg"
        if r < 0.97:
            return "JPG"
        return ""

    def src_for(self, site: Site, page_url: str, base: str | None, ext: str) -> tuple[str, str]:
        """(src as written in HTML, resolved absolute url with entities decoded)."""
        rng = self.rng
        path = self.image_path(site, ext)
        if self.image_base_url:
            name = path.split("?")[0].rsplit("/", 1)[-1].encode("ascii", "ignore").decode() or "x"
            rel = f"img/{rng.getrandbits(8):02x}/{name}"  # ASCII: servable as is
            if ext == "":
                rel = f"img/{rng.getrandbits(48):012x}"
            src = f"{self.image_base_url}/{rel}"
            return src, src
        host = site.img_host
        r = rng.random()
        if base is not None and r < 0.5:
            src = path.rsplit("/", 1)[-1] if rng.random() < 0.7 else "media/" + path.rsplit("/", 1)[-1]
        elif r < 0.45:
            src = f"{site.scheme}://{host}{path}"
        elif r < 0.55:
            src = f"//{host}{path}"
        elif r < 0.85 and host.endswith(site.domain):
            src = path
        elif r < 0.93:
            src = path.rsplit("/", 1)[-1] if rng.random() < 0.5 else "../" + path.rsplit("/", 1)[-1]
        else:
            src = f"https://{host}{path}"
        url = resolve(base or page_url, html.unescape(src))
        return src, url

    # ---- images

    def new_image(self, site: Site, page_url: str, base: str | None, in_figure: bool) -> Img:
        """One tag with at most one fault, drawn from SLOT_WEIGHTS, and its truth filled in."""
        rng = self.rng
        img = Img()
        fault = self.slot_kinds[bisect_left(self.slot_cum, rng.random() * self.slot_cum[-1])]
        img.fault = fault
        good_ext = self.pick_ext()
        if fault is None:
            self._good_pair(img, site, page_url, base)
        else:
            # the one fault; everything else about the tag is fine
            text = self.caption()
            if fault in ("no_alt", "empty_alt", "text_too_short", "text_too_long"):
                img.src, img.url = self.src_for(site, page_url, base, good_ext)
                if fault == "empty_alt":
                    img.alt = ch(rng, ["", "", " ", "&#8203;", "\n"])
                elif fault == "text_too_short":
                    img.alt = escape(ch(rng, SHORT_ALTS))
                elif fault == "text_too_long":
                    img.alt = self.corpus.words(rng, 4700, 6500)
                if fault in ("no_alt", "empty_alt") and rng.random() < 0.3:
                    img.title = escape(self.caption())
                elif rng.random() < 0.1:
                    img.title = escape(ch(rng, SHORT_ALTS))
            elif fault == "scheme":
                img.alt = self.alt_raw(text)
                r = rng.random()
                if r < 0.6:  # lazy loading: placeholder in src, the real image in data-src
                    img.src = ch(rng, LAZY_PLACEHOLDERS)
                    ds, img.lazy_url = self.src_for(site, page_url, base, good_ext)
                    img.data_src = ds
                elif r < 0.8:
                    img.src = ch(rng, JS_SRCS)
                else:
                    img.src = (
                        "data:image/jpeg;base64," + base64.b64encode(rng.randbytes(ri(rng, 60, 600))).decode()
                    )
            elif fault == "extension":
                img.alt = self.alt_raw(text)
                img.src, img.url = self.src_for(
                    site, page_url, base, ch(rng, ["svg", "gif", "gif", "GIF", "svg"])
                )
            elif fault == "url_too_long":
                img.alt = self.alt_raw(text)
                if self.image_base_url:
                    img.src = f"{self.image_base_url}/img/r/{rng.randbytes(1100).hex()}/photo.jpg"
                else:
                    pad = rng.randbytes(ri(rng, 1060, 1500)).hex()
                    img.src = f"https://{site.img_host}/cdn-cgi/image/fit=cover,w=800/{pad}/photo.jpg"
                img.url = img.src
            elif fault == "domain_too_long":
                img.alt = self.alt_raw(text)
                sub = self.corpus.slug(rng, 4, 20)
                host = f"{sub}-img-cdn-eu-west-{ri(rng, 1, 3)}-prod-cache-{ri(rng, 100, 999)}.storage-accelerator-network.{site.domain}"
                while len(host) < MAX_DOMAIN_LENGTH + 10:
                    host = "edge-" + host
                img.src = f"https://{host}/i/{rng.getrandbits(40):010x}.jpg"
                img.url = img.src
            img.text = clean_text(img.alt) if img.alt is not None else None
        if img.title is not None:
            img.title_text = clean_text(img.title)
        self._serve(img)
        if img.alt is not None and img.alt in self.alt_info:
            img.noise, img.caption = self.alt_info[img.alt]
        if in_figure and (fault is None or fault in ("no_alt", "empty_alt")) and rng.random() < 0.6:
            img.fig_text = self.caption()
        return img

    def _serve(self, img: Img) -> None:
        """In image-server mode, pick the file to write for this tag (2% left missing: a 404)."""
        if not self.image_base_url or img.shared:
            return
        url = img.url or img.lazy_url
        if not url or not url.startswith(self.image_base_url + "/img/") or len(url) > MAX_URL_LENGTH:
            return
        if url_extension(url) in DROP_EXTENSIONS or self.rng.random() < 0.02:
            return
        img.image_rel = url[len(self.image_base_url) + 1 :]

    def _good_pair(self, img: Img, site: Site, page_url: str, base: str | None) -> None:
        rng = self.rng
        if self.issued and rng.random() < self.dup_rate:  # repeat a pair this file already used
            url, alt = self.issued[int(rng.random() * len(self.issued))]
            img.src, img.url, img.alt, img.dup = escape(url), url, alt, True
        else:
            k = self.new_pairs
            f = self.shared_fraction
            take = f > 0 and math.floor((k + 1) * f) > math.floor(k * f)
            if take:
                if self.shared_pos >= len(self.shared_slice):
                    raise ValueError(
                        f"shared_pairs_from has too few pairs for shared_fraction={float(f)}: file {self.idx} "
                        f"needs more than its {len(self.shared_slice)} (generate a larger first crawl)"
                    )
                url, _text, alt, noise, cap = self.shared_slice[self.shared_pos]
                self.alt_info[alt] = (noise, cap)
                self.shared_pos += 1
                self.shared_used += 1
                img.src, img.url, img.alt, img.shared = escape(url), url, alt, True
            else:
                while True:
                    if self.issued and rng.random() < 0.02:  # same image, another caption
                        img.url = self.issued[int(rng.random() * len(self.issued))][0]
                        img.src = escape(img.url)
                    else:
                        img.src, img.url = self.src_for(site, page_url, base, self.pick_ext())
                    img.alt = self.alt_raw(self.caption())
                    if (img.url, img.alt) not in self.issued_set and (
                        img.url,
                        clean_text(img.alt),
                    ) not in self.avoid:
                        break
            self.new_pairs += 1
            self.issued.append((img.url, img.alt))
            self.issued_set.add((img.url, img.alt))
            if rng.random() < 0.25:
                img.title = img.alt
        img.text = clean_text(img.alt)
        if rng.random() < 0.12 and not img.dup and not img.shared and not self.image_base_url:
            stem = img.src.rsplit(".", 1)
            if len(stem) == 2 and "?" not in stem[1]:
                img.srcset = f"{stem[0]}-300x200.{stem[1]} 300w, {stem[0]}-768x512.{stem[1]} 768w"

    # ---- pages

    def page(self, n: int) -> dict[str, Any]:
        """Page n: its URL, HTML bytes, WAT `HTML-Metadata`, `<img>` truth, base and license."""
        rng = self.rng
        domain = DOMAINS[bisect_left(DOMAIN_CUM, rng.random() * DOMAIN_CUM[-1])]
        site = self.sites.get(domain)
        if site is None:
            if len(self.sites) > 4000:
                self.sites.clear()
            site = self.sites[domain] = Site(domain, self.corpus)
        tpl = site.template
        slug = self.corpus.slug(rng)
        pid = rng.getrandbits(36)
        r = rng.random()
        if r < 0.35:
            path = f"/{ri(rng, 2012, 2024)}/{ri(rng, 1, 12):02d}/{slug}/"
        elif r < 0.6:
            path = f"/{ch(rng, ['blog', 'news', 'product', 'p', 'article', 'item'])}/{slug}-{pid}.html"
        elif r < 0.8:
            path = f"/{ch(rng, ['category', 'gallery', 'shop'])}/{slug}/{pid}"
        else:
            path = f"/index.php?p={pid}&amp;lang={site.lang}"
        page_url = f"{site.scheme}://{site.www}{domain}{html.unescape(path)}"
        base = None
        if rng.random() < 0.08:
            base = f"{site.scheme}://{site.img_host}/{ch(rng, ['media', 'assets', 'files'])}/{rng.getrandbits(16):04x}/"
        title = escape(self.caption()[:95].strip())
        # Head
        metas: list[dict] = []
        head_html = [f'<!DOCTYPE html>\n<html lang="{site.lang}">\n<head>\n<meta charset="utf-8">\n']
        head_html.append('<meta name="viewport" content="width=device-width, initial-scale=1">\n')
        metas.append({"name": "viewport", "content": "width=device-width, initial-scale=1"})
        desc = self.corpus.words(rng, 50, 160)
        head_html.append(f'<meta name="description" content="{desc}">\n')
        metas.append({"name": "description", "content": desc})
        head_html.append(f'<meta property="og:title" content="{title}">\n')
        metas.append({"content": title, "property": "og:title"})
        if rng.random() < 0.1:
            head_html.append('<meta name="robots" content="noindex, follow">\n')
            metas.append({"name": "robots", "content": "noindex, follow"})
        if rng.random() < 0.3:
            head_html.append('<meta http-equiv="X-UA-Compatible" content="IE=edge">\n')
            metas.append({"content": "IE=edge", "http-equiv": "X-UA-Compatible"})
        head_html.append(f"<title>{title}</title>\n")
        head: dict[str, Any] = {"Metas": metas, "Title": title}
        if base:
            head_html.append(f'<base href="{base}">\n')
            head["Base"] = base
        link = [
            {"path": "LINK@/href", "url": site.css, "rel": "stylesheet", "type": "text/css"},
            {"path": "LINK@/href", "url": page_url.replace("&", "&amp;"), "rel": "canonical"},
        ]
        head_html.append(f'<link rel="stylesheet" href="{site.css}" type="text/css">\n')
        head_html.append(f'<link rel="canonical" href="{link[1]["url"]}">\n')
        if site.license and site.head_license:
            head_html.append(f'<link rel="license" href="{site.license[1]}">\n')
            link.append({"path": "LINK@/href", "url": site.license[1], "rel": "license"})
        head["Link"] = link
        for s in site.scripts:
            head_html.append(f'<script src="{s["url"]}" type="text/javascript"></script>\n')
        if site.scripts:
            head["Scripts"] = list(site.scripts)
        head_html.append(
            "<style>body{font-family:sans-serif;margin:0}.wp-caption{max-width:100%}</style>\n</head>\n"
        )
        # Body
        links: list[dict] = []
        body = [
            f'<body class="{tpl} page-{pid}">\n<header id="masthead"><a href="/" rel="home">{escape(site.name)}</a>'
        ]
        links.append({"path": "A@/href", "url": "/", "rel": "home", "text": escape(site.name)})
        body.append(site.nav)
        links.extend(site.nav_links)
        body.append(
            '<form role="search" method="get" action="/search"><input type="text" name="q"></form></header>\n'
        )
        links.append({"path": "FORM@/action", "method": "get", "url": "/search"})
        body.append(f'<main id="content"><article><h1>{title}</h1>\n')
        n_img = self._n_images(tpl)
        imgs: list[Img] = []
        for i in range(n_img):
            # text between images: paragraphs and inline links
            if i == 0 or rng.random() < 0.5:
                body.append("<p>" + self.corpus.words(rng, 120, 600) + "</p>\n")
            if rng.random() < 0.4:
                w = site.words(rng, 4, 35)
                u = (
                    f"/{self.corpus.slug(rng)}/"
                    if rng.random() < 0.6
                    else f"https://{ch(rng, DOMAINS)}/{self.corpus.slug(rng)}"
                )
                if u.startswith("https://") and rng.random() < 0.5:
                    body.append(
                        f'<p>{self.corpus.words(rng, 40, 90)} <a href="{u}" target="_blank">{w}</a>.</p>\n'
                    )
                    links.append({"path": "A@/href", "url": u, "target": "_blank", "text": w})
                else:
                    body.append(f'<p>{self.corpus.words(rng, 40, 90)} <a href="{u}">{w}</a>.</p>\n')
                    links.append({"path": "A@/href", "url": u, "text": w})
            in_fig = tpl == "blog" and rng.random() < 0.5
            img = self.new_image(site, page_url, base, in_fig)
            imgs.append(img)
            wrap = tpl in ("shop", "gallery") and rng.random() < 0.7
            tag = self._img_tag(img, tpl)
            entry: dict[str, Any] = {"path": "IMG@/src", "url": img.src}
            if img.alt is not None:
                entry["alt"] = img.alt
            if img.title is not None:
                entry["title"] = img.title
            if in_fig:
                body.append(f'<figure class="wp-block-image">{tag}')
                links.append(entry)
                if img.fig_text:
                    body.append(f"<figcaption>{escape(img.fig_text)}</figcaption>")
                body.append("</figure>\n")
            elif wrap:
                href = f"/{site.slug(rng)}-{rng.getrandbits(24)}.html"
                name = site.words(rng, 8, 60)
                body.append(
                    f'<div class="item"><a href="{href}">{tag}<span class="name">{name}</span></a></div>\n'
                )
                links.append(entry)
                a = {"path": "A@/href", "url": href}
                if name:
                    a["text"] = name
                links.append(a)
            else:
                body.append(f"<p>{tag}</p>\n")
                links.append(entry)
        body.append("<p>" + self.corpus.words(rng, 200, 1100) + "</p>\n</article>\n")
        # related posts
        body.append('<aside class="related"><ul>')
        for _ in range(ri(rng, 3, 25)):
            w = site.words(rng, 10, 70)
            u = f"/{site.slug(rng)}-{rng.getrandbits(20)}/"
            body.append(f'<li><a href="{u}">{w}</a></li>')
            links.append({"path": "A@/href", "url": u, "text": w})
        body.append("</ul></aside>\n")
        # tags, share buttons, comments and pagination: the repetitive links real pages carry
        if rng.random() < 0.6:
            body.append('<div class="tags">')
            for _ in range(ri(rng, 2, 20)):
                t = site.slug(rng, 3, 18)
                body.append(f'<a href="/tag/{t}/" rel="tag">{t.replace("-", " ")}</a> ')
                links.append(
                    {"path": "A@/href", "url": f"/tag/{t}/", "rel": "tag", "text": t.replace("-", " ")}
                )
            body.append("</div>\n")
        if rng.random() < 0.5:
            q = quote(page_url, safe="")
            body.append('<div class="share">')
            for share, label in SHARES:
                u = share.format(q=q)
                body.append(
                    f'<a href="{u}" target="_blank" rel="nofollow noopener" title="{label}">{label}</a>'
                )
                links.append(
                    {
                        "path": "A@/href",
                        "url": u,
                        "target": "_blank",
                        "title": label,
                        "rel": "nofollow noopener",
                        "text": label,
                    }
                )
            body.append("</div>\n")
        if tpl in ("blog", "news") and rng.random() < 0.5:
            body.append('<ol class="comments">')
            for _ in range(ri(rng, 1, 15)):
                cid = ri(rng, 1000, 99999)
                who = site.words(rng, 3, 16)
                body.append(
                    f'<li id="comment-{cid}"><cite>{who}</cite><p>{site.words(rng, 20, 200)}</p>'
                    f'<a rel="nofollow" class="comment-reply-link" href="?replytocom={cid}#respond">Reply</a></li>'
                )
                links.append(
                    {
                        "path": "A@/href",
                        "url": f"?replytocom={cid}#respond",
                        "rel": "nofollow",
                        "text": "Reply",
                    }
                )
            body.append("</ol>\n")
        if tpl in ("shop", "gallery") and rng.random() < 0.7:
            body.append('<nav class="pagination">')
            for k in range(1, ri(rng, 3, 12)):
                body.append(f'<a class="page-numbers" href="?page={k}">{k}</a>')
                links.append({"path": "A@/href", "url": f"?page={k}", "text": str(k)})
            body.append("</nav>\n")
        body.append("</main>\n")
        if tpl == "news" and rng.random() < 0.3:
            vid = base64.urlsafe_b64encode(rng.randbytes(8)).decode()[:11]
            body.append(
                f'<iframe src="https://www.youtube.com/embed/{vid}" width="560" height="315"></iframe>\n'
            )
            links.append({"path": "IFRAME@/src", "url": f"https://www.youtube.com/embed/{vid}"})
        body.append(site.footer)
        links.extend(site.footer_links)
        lic = site.license
        if lic:
            body.append(f'<p class="license"><a rel="license" href="{lic[1]}">')
            badge = f"https://mirrors.creativecommons.org/presskit/buttons/88x31/svg/{lic[0].replace('cc-', '').replace('pdm', 'publicdomain')}.svg"
            bimg = Img()
            bimg.src = bimg.url = badge
            bimg.alt = "Creative Commons License"
            bimg.text = bimg.alt
            bimg.fault = "extension"
            imgs.append(bimg)
            body.append(
                f'<img alt="Creative Commons License" style="border-width:0" src="{badge}"></a> {lic[2]}</p>\n'
            )
            links.append({"path": "IMG@/src", "url": badge, "alt": "Creative Commons License"})
            links.append({"path": "A@/href", "url": lic[1], "rel": "license"})
        body.append(f"<p>&copy; {ri(rng, 2005, 2024)} {escape(site.name)}</p></footer>\n</body>\n</html>\n")
        html_bytes = ("".join(head_html) + "".join(body)).encode("utf-8")
        hm: dict[str, Any] = {"Head": head, "Links": links}
        return {
            "url": page_url,
            "site": site,
            "html": html_bytes,
            "html_meta": hm,
            "imgs": imgs,
            "base": base,
            "license": lic[0] if lic else None,
            "license_url": lic[1] if lic else None,
            "n": n,
        }

    def _n_images(self, tpl: str) -> int:
        rng = self.rng
        if rng.random() < 0.08:
            return 0
        if tpl in ("shop", "gallery"):
            return min(40, int(rng.expovariate(1 / 16)) + 1)
        return min(40, int(rng.expovariate(1 / 7)) + 1)

    def _img_tag(self, img: Img, tpl: str) -> str:
        rng = self.rng
        parts = ["<img"]
        if img.data_src is not None:
            parts.append(f' src="{img.src}" data-src="{img.data_src}" class="lazyload"')
        else:
            parts.append(f' src="{img.src}"')
        if img.srcset:
            parts.append(f' srcset="{img.srcset}" sizes="(max-width: 768px) 100vw, 768px"')
        if img.alt is not None:
            parts.append(f' alt="{img.alt}"')
        if img.title is not None:
            parts.append(f' title="{img.title}"')
        if rng.random() < 0.5:
            parts.append(f' width="{ch(rng, [150, 300, 640, 800])}" height="{ch(rng, [100, 200, 480, 600])}"')
        if rng.random() < 0.3:
            parts.append(' loading="lazy"')
        parts.append(">" if rng.random() < 0.8 else " />")
        return "".join(parts)


def resolve(base: str, ref: str) -> str:
    """urljoin, with the common absolute and scheme-relative forms done without parsing."""
    if ref.startswith(("https://", "http://")):
        return ref
    if ref.startswith("//"):
        return base[: base.index(":") + 1] + ref
    return urljoin(base, ref)
