/* The dashboard page: keeps a card per session, grouped by scanner station, up to date from the
 * websocket /ws (a snapshot on connect, then batches of what changed; web/README.md). Reconnects with
 * back-off. Every text from the server is set with textContent, never parsed as HTML. The token, when
 * the page's address has one (?token=...), goes with the websocket, the thumbnails and the
 * "Accept as reference" request (as an Authorization header there). */
"use strict";

(function () {
  const token = new URLSearchParams(location.search).get("token");
  const RUNNING = new Set(["receiving", "reconstructing"]);
  const SHOWN_TEXT_LEVELS = new Set(["ERROR", "WARNING"]);
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 10000;

  const board = document.getElementById("board");
  const empty = document.getElementById("empty");
  const nav = document.getElementById("stations");
  const connection = document.getElementById("connection");

  const sessions = new Map(); // id -> the session as the server last sent it
  const cards = new Map(); // id -> {root, parts..., station, thumbnail}
  const sections = new Map(); // station name -> {root, list, count}
  let skew = 0; // server clock minus ours, seconds
  let retryMs = RETRY_MIN_MS;

  function withToken(url) {
    if (!token) return url;
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- the websocket -------------------------------------------------------------------------
  function connect() {
    const url = new URL("ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = token ? "?token=" + encodeURIComponent(token) : "";
    setConnection("connecting", "connecting…");
    const socket = new WebSocket(url.href);
    socket.onopen = function () {
      retryMs = RETRY_MIN_MS;
      setConnection("live", "live");
    };
    socket.onmessage = function (event) {
      handle(JSON.parse(event.data));
    };
    socket.onclose = function () {
      setConnection("down", "disconnected; retrying in " + Math.round(retryMs / 1000) + " s");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    };
  }

  function setConnection(state, text) {
    connection.dataset.state = state;
    connection.textContent = text;
  }

  function handle(message) {
    if (message.type === "batch") {
      message.messages.forEach(apply);
    } else {
      apply(message);
    }
    renderStations();
  }

  function apply(message) {
    if (typeof message.time === "number") skew = message.time - Date.now() / 1000;
    if (message.type === "snapshot") {
      const keep = new Set(message.sessions.map(function (s) { return s.id; }));
      Array.from(sessions.keys()).forEach(function (id) { if (!keep.has(id)) remove(id); });
      message.sessions.forEach(upsert);
    } else if (message.type === "session") {
      upsert(message.session);
    } else if (message.type === "removed") {
      remove(message.id);
    }
  }

  // -- stations ------------------------------------------------------------------------------
  function selectedStation() {
    const match = /^#station=(.*)$/.exec(location.hash);
    return match ? decodeURIComponent(match[1]) : null;
  }

  function section(name) {
    let entry = sections.get(name);
    if (entry) return entry;
    const root = element("section", "station");
    root.dataset.station = name;
    const heading = element("h2", "station-name", name);
    const list = element("div", "cards");
    root.append(heading, list);
    entry = {root: root, list: list};
    sections.set(name, entry);
    const names = Array.from(sections.keys()).sort(function (a, b) { return a.localeCompare(b); });
    const next = sections.get(names[names.indexOf(name) + 1]);
    board.insertBefore(root, next ? next.root : null);
    return entry;
  }

  function renderStations() {
    const chosen = selectedStation();
    nav.replaceChildren();
    const all = element("a", chosen === null ? "chosen" : "", "all stations");
    all.href = "#";
    nav.append(all);
    Array.from(sections.keys()).sort(function (a, b) { return a.localeCompare(b); }).forEach(function (name) {
      const entry = sections.get(name);
      const active = Array.from(entry.list.children).filter(function (card) {
        return RUNNING.has(card.dataset.state);
      }).length;
      const link = element("a", name === chosen ? "chosen" : "", name + (active ? " (" + active + " running)" : ""));
      link.href = "#station=" + encodeURIComponent(name);
      nav.append(link);
      entry.root.hidden = chosen !== null && chosen !== name;
    });
    empty.hidden = sessions.size > 0;
  }

  // -- cards ---------------------------------------------------------------------------------
  function newCard(session) {
    const root = element("article", "card");
    root.dataset.id = session.id;
    const head = element("header", "card-head");
    const protocol = element("h3", "protocol");
    const state = element("span", "state");
    head.append(protocol, state);
    const body = element("div", "card-body");
    const thumb = element("img", "thumb");
    thumb.alt = "latest image";
    thumb.hidden = true;
    const facts = element("dl", "facts");
    body.append(thumb, facts);
    const qa = element("div", "qa");
    qa.hidden = true;
    const qaLine = element("p", "qa-line");
    const deviations = element("ul", "deviations");
    const accept = element("button", "accept", "Accept as reference");
    accept.type = "button";
    accept.hidden = true;
    accept.addEventListener("click", function () { acceptReference(session.id); });
    const acceptNote = element("span", "accept-note");
    qa.append(qaLine, deviations, accept, acceptNote);
    const texts = element("ul", "texts");
    root.append(head, body, qa, texts);
    return {root: root, protocol: protocol, state: state, thumb: thumb, facts: facts, qa: qa, qaLine: qaLine,
            deviations: deviations, accept: accept, acceptNote: acceptNote, texts: texts,
            station: null, thumbnail: 0};
  }

  function upsert(session) {
    sessions.set(session.id, session);
    let card = cards.get(session.id);
    if (!card) {
      card = newCard(session);
      cards.set(session.id, card);
    }
    if (card.station !== session.station) {
      const old = card.station;
      card.station = session.station;
      place(card, session);
      if (old !== null) dropEmptySection(old);
    }
    fill(card, session);
  }

  function place(card, session) {
    const list = section(session.station).list;
    const after = Array.from(list.children).find(function (other) {
      const shown = sessions.get(other.dataset.id);
      return other !== card.root && shown && shown.started < session.started;
    });
    list.insertBefore(card.root, after || null);
  }

  function remove(id) {
    const card = cards.get(id);
    sessions.delete(id);
    cards.delete(id);
    if (!card) return;
    card.root.remove();
    dropEmptySection(card.station);
  }

  function dropEmptySection(name) {
    const entry = sections.get(name);
    if (entry && !entry.list.children.length) {
      entry.root.remove();
      sections.delete(name);
    }
  }

  function elapsedSeconds(session) {
    if (RUNNING.has(session.state)) return Math.max(0, Date.now() / 1000 + skew - session.started);
    return session.elapsed;
  }

  function duration(seconds) {
    if (seconds < 60) return seconds.toFixed(1) + " s";
    const minutes = Math.floor(seconds / 60);
    const rest = Math.floor(seconds - minutes * 60);
    return minutes + ":" + String(rest).padStart(2, "0") + " min";
  }

  function fact(list, name, value, className) {
    const term = element("dt", "", name);
    const detail = element("dd", className || "", value);
    list.append(term, detail);
  }

  function fill(card, session) {
    card.root.dataset.state = session.state;
    card.protocol.textContent = session.protocol || "(waiting for the header)";
    card.protocol.title = session.summary || "";
    card.state.textContent = session.state;
    card.state.className = "state state-" + session.state;

    card.facts.replaceChildren();
    const module = session.module + (session.config && session.config !== session.module
      ? " (asked for " + session.config + ")" : "");
    fact(card.facts, "module", module || "–");
    fact(card.facts, "acquisitions", String(session.acquisitions));
    fact(card.facts, "images in / out", session.images_in + " / " + session.images_out);
    fact(card.facts, "MB/s", session.mb_per_s.toFixed(1));
    fact(card.facts, "elapsed", duration(elapsedSeconds(session)), "elapsed");
    fact(card.facts, "client", session.peer || "–");
    if (session.patient) {
      fact(card.facts, "patient", [session.patient.name, session.patient.id, session.patient.birth_date]
        .filter(Boolean).join(", "));
    }

    if (session.thumbnail && session.thumbnail !== card.thumbnail) {
      card.thumbnail = session.thumbnail;
      card.thumb.src = withToken("api/sessions/" + encodeURIComponent(session.id) + "/thumbnail.png?v="
        + session.thumbnail);
      card.thumb.hidden = false;
    }

    const qa = session.qa;
    card.qa.hidden = !qa;
    if (qa) {
      card.qa.className = "qa qa-" + qa.status.toLowerCase();
      const references = typeof qa.reference_count === "number" ? " (" + qa.reference_count + " reference"
        + (qa.reference_count === 1 ? "" : "s") + ")" : "";
      card.qaLine.textContent = "QA " + qa.status + references;
      card.deviations.replaceChildren();
      qa.deviations.forEach(function (deviation) {
        card.deviations.append(element("li", "deviation", deviation.says));
      });
      card.accept.hidden = !token || qa.status === "PASS";
    }

    card.texts.replaceChildren();
    session.texts.filter(function (t) { return SHOWN_TEXT_LEVELS.has(t.level); }).forEach(function (t) {
      card.texts.append(element("li", "text text-" + t.level.toLowerCase(), t.level + ": " + t.text));
    });
  }

  function acceptReference(id) {
    const card = cards.get(id);
    card.accept.disabled = true;
    card.acceptNote.textContent = "sending…";
    fetch("api/qa/" + encodeURIComponent(id) + "/accept", {
      method: "POST", headers: {"Authorization": "Bearer " + token}, cache: "no-store",
    }).then(function (response) {
      card.acceptNote.textContent = response.ok ? "accepted as the reference"
        : "refused (" + response.status + " " + response.statusText + ")";
    }).catch(function (error) {
      card.acceptNote.textContent = "failed: " + error;
    }).finally(function () {
      card.accept.disabled = false;
    });
  }

  function tick() {
    cards.forEach(function (card, id) {
      const session = sessions.get(id);
      if (session && RUNNING.has(session.state)) {
        const node = card.facts.querySelector("dd.elapsed");
        if (node) node.textContent = duration(elapsedSeconds(session));
      }
    });
  }

  window.addEventListener("hashchange", renderStations);
  setInterval(tick, 1000);
  renderStations();
  connect();
})();
