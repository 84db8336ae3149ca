// sockit chat in the browser: speaks the chat's JSON-lines protocol over a WebSocket (one JSON
// object per message), keeps the room's member list from join/leave/nick events, and reconnects
// with jittered, capped backoff when the server goes away. All text reaches the page through
// textContent, never as HTML.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    body: document.body,
    title: $('title'),
    me: $('me'),
    status: $('status'),
    menu: $('menu'),
    rooms: $('rooms'),
    members: $('members'),
    count: $('count'),
    refreshRooms: $('refresh-rooms'),
    joinForm: $('join-form'),
    joinRoom: $('join-room'),
    banner: $('banner'),
    bannerText: $('banner-text'),
    retry: $('retry'),
    log: $('log'),
    sendForm: $('send-form'),
    input: $('input'),
    loginForm: $('login-form'),
    nick: $('nick'),
    room: $('room'),
    loginError: $('login-error'),
    nickTaken: $('nick-taken'),
    nickTakenText: $('nick-taken-text'),
    nickRetry: $('nick-retry'),
  };

  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 15000;
  // A connection that lasted this long counts as healthy: the next failure starts over at the base.
  const HEALTHY_MS = 10000;
  const ROOMS_REFRESH_MS = 60000;
  const LOG_MAX = 1000;

  const st = {
    wantNick: '', // the nick to ask for on (re)connect
    wantRoom: '', // the room to (re)join
    me: '', // the nick the server gave us
    room: '', // the room we are in
    members: new Map(), // folded nick -> nick
    ws: null,
    openedAt: 0,
    attempts: 0,
    retryTimer: 0,
    countdownTimer: 0,
    roomsTimer: 0,
    left: false, // the user quit: do not reconnect by ourselves
    replaying: false, // between hello and our own join: skip what we already show
    seen: new Set(), // seq:ts of the events shown in this room
    silent: { members: 0, rooms: 0 }, // replies to requests the page made itself
    history: [],
    historyAt: -1,
    taken: '', // the nick the server said is taken, while the page asks for another
  };

  // ---- state and status -------------------------------------------------------------------

  function setState(state, text) {
    ui.body.dataset.state = state;
    ui.status.textContent = text || state;
  }

  // The banner takes room from the log: keep the newest line in view if it was.
  function showBanner(text, button) {
    keepBottom(() => {
      ui.bannerText.textContent = text;
      ui.retry.textContent = button || 'Reconnect now';
      ui.banner.hidden = false;
    });
  }

  function hideBanner() {
    keepBottom(() => {
      ui.banner.hidden = true;
    });
  }

  function atBottom() {
    const log = ui.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  }

  function keepBottom(change) {
    const was = atBottom();
    change();
    if (was) ui.log.scrollTop = ui.log.scrollHeight;
  }

  // ---- connection --------------------------------------------------------------------------

  function connect() {
    clearTimeout(st.retryTimer);
    clearInterval(st.countdownTimer);
    if (st.ws) return;
    st.left = false;
    setState('connecting', 'connecting…');
    showBanner('Connecting to the chat…', 'Retry now');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/ws`);
    } catch (e) {
      scheduleReconnect('cannot open a connection');
      return;
    }
    st.ws = ws;
    ws.onopen = () => {
      st.openedAt = Date.now();
      st.replaying = true;
      const hello = { sockit: 'chat', proto: 'json' };
      if (st.wantNick) hello.nick = st.wantNick;
      if (st.wantRoom) hello.room = st.wantRoom;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => {
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (m && typeof m === 'object') handle(m);
    };
    ws.onclose = (ev) => {
      if (st.ws !== ws) return;
      st.ws = null;
      closed(ev);
    };
  }

  function closed(ev) {
    clearInterval(st.roomsTimer);
    st.roomsTimer = 0;
    if (st.openedAt && Date.now() - st.openedAt >= HEALTHY_MS) st.attempts = 0;
    st.openedAt = 0;
    st.silent.members = 0;
    st.silent.rooms = 0;
    if (st.left || ev.code === 1000) {
      setState('disconnected', 'disconnected');
      showBanner('You left the chat.', 'Join again');
      return;
    }
    if (ev.code === 4000) {
      setState('disconnected', 'disconnected');
      showBanner('Disconnected after being idle for a long time.', 'Reconnect');
      return;
    }
    const why = ev.code === 1001 ? 'the server stopped' : ev.reason || 'the connection was lost';
    scheduleReconnect(why);
  }

  // Full-jitter exponential backoff: half the step plus a random half, so a restarted server is
  // not hit by every tab at the same instant.
  function scheduleReconnect(why) {
    const step = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** st.attempts);
    const delay = Math.round(step / 2 + (Math.random() * step) / 2);
    st.attempts = Math.min(st.attempts + 1, 16);
    const due = Date.now() + delay;
    const tick = () => {
      const s = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setState('disconnected', `disconnected — retrying in ${s} s`);
      showBanner(`Disconnected: ${why}. Reconnecting in ${s} s…`, 'Reconnect now');
    };
    tick();
    clearInterval(st.countdownTimer);
    st.countdownTimer = setInterval(tick, 1000);
    clearTimeout(st.retryTimer);
    st.retryTimer = setTimeout(connect, delay);
  }

  function send(text) {
    if (!st.ws || st.ws.readyState !== WebSocket.OPEN) return false;
    st.ws.send(JSON.stringify({ text }));
    return true;
  }

  // A request whose reply only updates the side panel.
  function quietly(kind, command) {
    if (send(command)) st.silent[kind] += 1;
  }

  // ---- protocol ---------------------------------------------------------------------------

  function handle(m) {
    // Events carry a sequence number; replies to this client do not.
    if (typeof m.seq === 'number') {
      event(m);
      return;
    }
    switch (m.type) {
      case 'welcome':
        if (typeof m.nick === 'string') setMe(m.nick);
        if (m.proto) {
          setState('connected', 'connected');
          hideBanner();
          line('reply', `Connected as ${m.nick}.`);
        }
        break;
      case 'members':
        if (m.room === st.room && Array.isArray(m.nicks)) setMembers(m.nicks);
        if (st.silent.members > 0) st.silent.members -= 1;
        else line('reply', m.text);
        break;
      case 'rooms':
        if (Array.isArray(m.rooms)) setRooms(m.rooms);
        if (st.silent.rooms > 0) st.silent.rooms -= 1;
        else line('reply', m.text);
        break;
      case 'nick':
        if (typeof m.nick === 'string') setMe(m.nick);
        line('reply', m.text);
        break;
      case 'error':
        line('error', m.text);
        if (m.code === 'nick_taken') nickTaken(m.wanted);
        break;
      case 'bye':
        st.left = true;
        line('reply', m.text);
        break;
      case 'help':
        line('reply reply-help', m.text);
        break;
      default:
        // welcome, motd, info, notice, history, history_end, and kinds added later.
        if (typeof m.text === 'string') line('reply', m.text);
    }
  }

  function event(m) {
    if (m.room && m.room !== st.room) enterRoom(m.room);
    const key = `${m.seq}:${m.ts}`;
    if (st.replaying && st.seen.has(key)) return;
    st.seen.add(key);
    switch (m.type) {
      case 'join':
        addMember(m.nick);
        if (m.nick === st.me) {
          // Our own join follows the room's replayed history.
          st.replaying = false;
          st.wantRoom = m.room;
          // Each costs a line of the rate limit (5/s, bursts of 10): the member list is asked
          // for once per room, the room list once per connection and then once a minute.
          quietly('members', '/who');
          if (!st.roomsTimer) {
            quietly('rooms', '/rooms');
            st.roomsTimer = setInterval(() => quietly('rooms', '/rooms'), ROOMS_REFRESH_MS);
          }
          notice(m, `you joined #${m.room}`);
        } else {
          notice(m, `${m.nick} joined #${m.room}`);
        }
        break;
      case 'leave':
        removeMember(m.nick);
        notice(m, `${m.nick} left #${m.room}${m.text ? ` (${m.text})` : ''}`);
        break;
      case 'nick':
        removeMember(m.nick);
        addMember(m.target);
        if (m.nick === st.me) setMe(m.target);
        notice(m, `${m.nick} is now known as ${m.target}`);
        break;
      case 'notice':
        notice(m, m.text);
        break;
      case 'topic':
        notice(m, m.text ? `${m.nick} set the topic of #${m.room}: ${m.text}` : `${m.nick} cleared the topic of #${m.room}`);
        break;
      default:
        said(m);
    }
  }

  // ---- rendering (textContent only) ---------------------------------------------------------

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function clock(ts) {
    const d = new Date(ts);
    const two = (n) => String(n).padStart(2, '0');
    return `${two(d.getHours())}:${two(d.getMinutes())}`;
  }

  function stamp(li, ts) {
    const t = el('time', '', clock(ts));
    t.dateTime = new Date(ts).toISOString();
    li.append(t);
  }

  function hue(nick) {
    let h = 0;
    for (const c of nick) h = (h * 31 + c.codePointAt(0)) % 360;
    return h;
  }

  function nickEl(nick) {
    const n = el('span', 'nick', nick);
    n.style.setProperty('--hue', hue(nick));
    return n;
  }

  function append(li) {
    keepBottom(() => {
      ui.log.append(li);
      while (ui.log.childElementCount > LOG_MAX) ui.log.firstElementChild.remove();
    });
  }

  function said(m) {
    const li = el('li', `msg kind-${m.type}`);
    li.dataset.seq = m.seq;
    stamp(li, m.ts);
    if (m.type === 'action') {
      li.append(el('span', 'nick', `* ${m.nick}`));
    } else if (m.type === 'private') {
      li.append(nickEl(`${m.nick} → ${m.target}`));
    } else {
      li.append(nickEl(m.nick));
    }
    li.append(el('span', 'text', m.text));
    if (m.nick === st.me) li.classList.add('mine');
    else if (mentions(m.text, st.me)) li.classList.add('mention');
    append(li);
  }

  // Whether the text names the nick as a word of its own, case-insensitively ("ann:", "hi ANN!",
  // not "annie").
  function mentions(text, nick) {
    if (!nick || typeof text !== 'string') return false;
    const t = text.toLowerCase();
    const n = nick.toLowerCase();
    const word = /[\p{L}\p{N}_]/u;
    for (let i = t.indexOf(n); i >= 0; i = t.indexOf(n, i + 1)) {
      const before = i > 0 ? [...t.slice(0, i)].pop() : '';
      const after = [...t.slice(i + n.length)][0] || '';
      if (!word.test(before) && !word.test(after)) return true;
    }
    return false;
  }

  function notice(m, text) {
    const li = el('li', `notice kind-${m.type}`);
    stamp(li, m.ts);
    li.append(el('span', 'text', text));
    append(li);
  }

  function line(cls, text) {
    const li = el('li', cls);
    li.append(el('span', 'text', String(text)));
    append(li);
  }

  // ---- rooms and members ------------------------------------------------------------------

  function enterRoom(room) {
    st.room = room;
    st.members.clear();
    renderMembers();
    st.seen.clear();
    ui.log.replaceChildren();
    ui.log.append(el('li', 'divider', `#${room}`));
    ui.title.textContent = `#${room}`;
    document.title = `#${room} — sockit chat`;
    ui.input.placeholder = `Message #${room} — /help for commands`;
    for (const li of ui.rooms.children) li.classList.toggle('current', li.dataset.room === room);
  }

  // The nick asked for is someone else's: say so until another is picked (not a passing line).
  function nickTaken(wanted) {
    st.taken = wanted || '';
    keepBottom(() => {
      takenText();
      ui.nickTaken.hidden = false;
    });
    ui.nickRetry.value = '';
    ui.nickRetry.focus();
  }

  function takenText() {
    const now = st.me ? `; you are ${st.me} for now` : '';
    ui.nickTakenText.textContent = `The nick “${st.taken}” is taken${now}. Pick another:`;
  }

  function setMe(nick) {
    st.me = nick;
    if (!/^guest\d+$/.test(nick)) ui.nickTaken.hidden = true;
    else if (!ui.nickTaken.hidden) takenText();
    ui.me.textContent = nick;
    // Reconnects ask for the nick we have now (guest names are left to the server).
    if (!/^guest\d+$/.test(nick)) {
      st.wantNick = nick;
      try {
        localStorage.setItem('sockit.nick', nick);
      } catch (e) {
        /* storage may be off */
      }
    }
    renderMembers();
  }

  const fold = (n) => n.toLowerCase();

  function addMember(nick) {
    st.members.set(fold(nick), nick);
    renderMembers();
  }

  function removeMember(nick) {
    st.members.delete(fold(nick));
    renderMembers();
  }

  function setMembers(nicks) {
    st.members.clear();
    for (const n of nicks) if (typeof n === 'string') st.members.set(fold(n), n);
    renderMembers();
  }

  function renderMembers() {
    const nicks = [...st.members.values()].sort((a, b) => fold(a).localeCompare(fold(b)));
    ui.members.replaceChildren(
      ...nicks.map((n) => {
        const li = el('li', n === st.me ? 'me-item' : '', n);
        li.dataset.nick = n;
        li.title = n === st.me ? 'you' : `send ${n} a private message`;
        return li;
      }),
    );
    ui.count.textContent = nicks.length ? `(${nicks.length})` : '';
    // The room list's count for our own room follows the member list between refreshes.
    for (const li of ui.rooms.children) {
      if (li.dataset.room === st.room && nicks.length) li.querySelector('.n').textContent = String(nicks.length);
    }
  }

  function setRooms(rooms) {
    ui.rooms.replaceChildren(
      ...rooms
        .filter((r) => r && typeof r.name === 'string')
        .map((r) => {
          const li = el('li', r.name === st.room ? 'current' : '', `#${r.name}`);
          li.dataset.room = r.name;
          li.append(el('span', 'n', String(r.members)));
          return li;
        }),
    );
  }

  // ---- input ------------------------------------------------------------------------------

  function closeDrawer() {
    ui.body.classList.remove('drawer');
    ui.menu.setAttribute('aria-expanded', 'false');
  }

  ui.sendForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = ui.input.value;
    if (!text.trim()) return;
    if (!send(text)) {
      line('error', 'not connected: the message was kept in the input box');
      return;
    }
    if (/^\/(quit|exit)\b/i.test(text.trim())) st.left = true;
    st.history.push(text);
    if (st.history.length > 100) st.history.shift();
    st.historyAt = st.history.length;
    ui.input.value = '';
  });

  // Up and down walk through what was typed before.
  ui.input.addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowUp' && e.key !== 'ArrowDown') return;
    if (!st.history.length) return;
    const step = e.key === 'ArrowUp' ? -1 : 1;
    st.historyAt = Math.max(0, Math.min(st.history.length, st.historyAt + step));
    ui.input.value = st.history[st.historyAt] ?? '';
    e.preventDefault();
  });

  ui.rooms.addEventListener('click', (e) => {
    const li = e.target.closest('li[data-room]');
    if (!li || li.dataset.room === st.room) return;
    send(`/join ${li.dataset.room}`);
    closeDrawer();
  });

  ui.members.addEventListener('click', (e) => {
    const li = e.target.closest('li[data-nick]');
    if (!li || li.dataset.nick === st.me) return;
    ui.input.value = `/msg ${li.dataset.nick} `;
    closeDrawer();
    ui.input.focus();
  });

  ui.joinForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const room = ui.joinRoom.value.trim();
    if (!room) return;
    if (send(`/join ${room}`)) ui.joinRoom.value = '';
    closeDrawer();
  });

  ui.nickTaken.addEventListener('submit', (e) => {
    e.preventDefault();
    const nick = ui.nickRetry.value.trim();
    if (nick) send(`/nick ${nick}`);
  });

  ui.refreshRooms.addEventListener('click', () => quietly('rooms', '/rooms'));

  ui.menu.addEventListener('click', () => {
    const open = ui.body.classList.toggle('drawer');
    ui.menu.setAttribute('aria-expanded', String(open));
  });

  // On a phone, a tap beside the open drawer closes it.
  document.querySelector('.chat').addEventListener('click', closeDrawer);

  ui.retry.addEventListener('click', () => {
    st.attempts = 0;
    connect();
  });

  // Back online: no need to wait for the backoff.
  window.addEventListener('online', () => {
    if (!st.ws && !st.left && ui.body.dataset.state !== 'login') connect();
  });

  // ---- login ------------------------------------------------------------------------------

  const NICK = /^[^\d\-\s][^\s]{0,23}$/u;

  ui.loginForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const nick = ui.nick.value.trim();
    const room = ui.room.value.trim().replace(/^#/, '');
    if (nick && !NICK.test(nick)) {
      ui.loginError.textContent = 'A nick is up to 24 letters, digits or _ - . [ ] { } | ^, not starting with a digit or -.';
      return;
    }
    ui.loginError.textContent = '';
    st.wantNick = nick;
    st.wantRoom = room;
    connect();
    ui.input.focus();
  });

  try {
    ui.nick.value = localStorage.getItem('sockit.nick') || '';
  } catch (e) {
    /* storage may be off */
  }
  const params = new URLSearchParams(location.search);
  if (params.get('nick')) ui.nick.value = params.get('nick');
  if (params.get('room')) ui.room.value = params.get('room');
})();
