// The carebase video visit page: signalling over our WebSocket, media over WebRTC.
// The room id and join token come in the URL fragment (#room=...&token=...), which the
// browser never sends to a server. One RTCPeerConnection per other participant (up to 3);
// the participant with the smaller id makes the offer, so two never offer to each other.
"use strict";
(function () {
  const params = new URLSearchParams(location.hash.slice(1));
  const room = params.get("room");
  const token = params.get("token");
  const $ = (id) => document.getElementById(id);
  const statusLine = $("status");
  const peers = new Map(); // participant id -> {pc, tile, video, pending: []}
  const stats = {}; // participant id -> {framesDecoded, rtt, lost, quality}
  window.visitStats = stats;
  // for tests and support: the signalling socket, the peer connections, ICE restarts made
  const debug = { socket: () => ws, peers, restarts: 0 };
  window.visitDebug = debug;
  let ws = null;
  let me = null;
  let role = null;
  let iceServers = [];
  let localStream = null;
  let screenTrack = null;
  let admitted = false;
  let finished = false;
  let retries = 0;
  let queue = Promise.resolve();

  // The page's language: the panel carries the translations of the texts below (English,
  // the source text, where it has none); `{name}` placeholders are filled after translation.
  const panel = document.querySelector(".visit-panel");
  const TEXTS = JSON.parse((panel && panel.dataset.texts) || "{}");
  function t(text, values) {
    let out = TEXTS[text] || text;
    for (const [name, value] of Object.entries(values || {})) out = out.replace(`{${name}}`, value);
    return out;
  }

  function say(text, values) { statusLine.textContent = t(text, values); document.body.dataset.state = text; }

  function send(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  }

  function connect() {
    if (!room || !token) { say("This link has no room or join token."); return; }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${scheme}://${location.host}/telehealth/ws/${encodeURIComponent(room)}`);
    ws.onopen = () => send({ type: "join", token });
    ws.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      // one frame at a time: an ICE candidate must not overtake the offer before it
      queue = queue.then(() => handle(frame)).catch((err) => console.error("visit:", err));
    };
    ws.onclose = (event) => {
      if (finished || [4401, 4409, 4001, 4000].includes(event.code)) {
        if (!finished && event.code === 4401) say("Your link has expired; ask for a new one.");
        return;
      }
      const wait = Math.min(10000, 500 * 2 ** retries++);
      say("Connection lost; reconnecting in {seconds} s…", { seconds: Math.round(wait / 1000) });
      setTimeout(connect, wait); // same token: the server resumes the same participant
    };
  }

  async function startMedia() {
    if (localStream) return;
    localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    $("local").srcObject = localStream;
  }

  async function handle(frame) {
    switch (frame.type) {
      case "joined": {
        const rejoined = me !== null; // the socket dropped and is back (same participant)
        retries = 0;
        me = frame.participant;
        role = frame.role;
        iceServers = frame.iceServers || [];
        $("end").hidden = role !== "clinician";
        await startMedia();
        showRoom(frame.room);
        // signalling sent while the socket was down is lost: renegotiate with an ICE
        // restart, so media that broke with the network recovers over fresh candidates
        if (rejoined && admitted) for (const [id, entry] of peers) { debug.restarts++; await offer(entry, id, true); }
        break;
      }
      case "room": showRoom(frame.room); break;
      case "offer": await onOffer(frame); break;
      case "answer": await peer(frame.from).pc.setRemoteDescription({ type: "answer", sdp: frame.sdp }); break;
      case "ice": await onIce(frame); break;
      case "chat": addChat(frame.name, frame.text); break;
      case "ping": send({ type: "pong", t: frame.t }); break;
      case "error": console.warn("visit error:", frame.code, frame.message);
        if (frame.code === "unauthorized" || frame.code === "refused") say(frame.message);
        break;
      default: break;
    }
  }

  function showRoom(view) {
    const mine = view.participants.find((p) => p.id === me);
    const state = mine ? mine.state : "unknown";
    if (view.ended || state === "ended") { finished = true; say("The visit has ended."); closeAll(); return; }
    if (state === "declined") { finished = true; say("The clinician could not admit you."); closeAll(); return; }
    if (state === "left") { say("You left the visit."); closeAll(); return; }
    admitted = state === "admitted";
    if (!admitted) {
      say(view.clinicianPresent ? "Waiting: the clinician will let you in shortly." : "Waiting for the clinician…");
      return;
    }
    say("In the visit");
    const inVisit = view.participants.filter((p) => p.state === "admitted" && p.id !== me);
    for (const other of inVisit) {
      if (!peers.has(other.id)) {
        const entry = peer(other.id, other.display);
        if (me < other.id) offer(entry, other.id);
      }
    }
    for (const id of [...peers.keys()]) {
      if (!inVisit.some((p) => p.id === id)) drop(id);
    }
    if (role === "clinician") showWaiting(view.participants.filter((p) => p.state === "waiting" || p.state === "checked-in"));
  }

  function showWaiting(waiting) {
    $("waiting-room").hidden = false;
    const list = $("waiting");
    list.replaceChildren();
    for (const p of waiting) {
      const item = document.createElement("li");
      item.textContent = `${p.display} (${t(p.role)}) `;
      for (const [label, kind] of [["Admit", "admit"], ["Decline", "decline"]]) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = t(label);
        button.dataset.participant = p.id;
        button.className = kind;
        button.onclick = () => send({ type: kind, participant: p.id });
        item.append(button);
      }
      list.append(item);
    }
  }

  function peer(id, display) {
    let entry = peers.get(id);
    if (entry) return entry;
    const pc = new RTCPeerConnection({ iceServers });
    const tile = document.createElement("figure");
    tile.className = "tile";
    tile.dataset.participant = id;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const caption = document.createElement("figcaption");
    caption.textContent = display || id;
    const quality = document.createElement("span");
    quality.className = "quality";
    quality.textContent = "…";
    tile.append(video, caption, quality);
    $("remotes").append(tile);
    entry = { pc, tile, video, quality, pending: [] };
    peers.set(id, entry);
    if (localStream) for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
    if (screenTrack) replaceVideo(screenTrack);
    pc.ontrack = (event) => { video.srcObject = event.streams[0] || new MediaStream([event.track]); };
    pc.onicecandidate = (event) => send({ type: "ice", to: id, candidate: event.candidate ? event.candidate.toJSON() : null });
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && me < id) offer(entry, id, true); // ICE restart
    };
    return entry;
  }

  async function offer(entry, id, restart) {
    const description = await entry.pc.createOffer(restart ? { iceRestart: true } : {});
    await entry.pc.setLocalDescription(description);
    send({ type: "offer", to: id, sdp: entry.pc.localDescription.sdp });
  }

  async function onOffer(frame) {
    const entry = peer(frame.from);
    if (entry.pc.signalingState !== "stable") {
      // both offered at once (a restart after a reconnect): the smaller id's offer wins
      if (me < frame.from) return;
      await entry.pc.setLocalDescription({ type: "rollback" });
    }
    await entry.pc.setRemoteDescription({ type: "offer", sdp: frame.sdp });
    for (const candidate of entry.pending.splice(0)) await entry.pc.addIceCandidate(candidate);
    await entry.pc.setLocalDescription(await entry.pc.createAnswer());
    send({ type: "answer", to: frame.from, sdp: entry.pc.localDescription.sdp });
  }

  async function onIce(frame) {
    const entry = peer(frame.from);
    if (!frame.candidate) return;
    if (!entry.pc.remoteDescription) { entry.pending.push(frame.candidate); return; }
    try { await entry.pc.addIceCandidate(frame.candidate); } catch (err) { console.warn("ice:", err); }
  }

  function drop(id) {
    const entry = peers.get(id);
    if (!entry) return;
    entry.pc.close();
    entry.tile.remove();
    peers.delete(id);
    delete stats[id];
  }

  function closeAll() {
    for (const id of [...peers.keys()]) drop(id);
    if (localStream) for (const track of localStream.getTracks()) track.stop();
  }

  // --- controls ---------------------------------------------------------------------------
  function toggle(button, on) { button.setAttribute("aria-pressed", String(on)); }

  $("mute").onclick = () => {
    if (!localStream) return;
    const muted = $("mute").getAttribute("aria-pressed") !== "true";
    for (const track of localStream.getAudioTracks()) track.enabled = !muted;
    toggle($("mute"), muted);
    $("mute").textContent = t(muted ? "Unmute" : "Mute");
  };
  $("camera").onclick = () => {
    if (!localStream) return;
    const off = $("camera").getAttribute("aria-pressed") !== "true";
    for (const track of localStream.getVideoTracks()) track.enabled = !off;
    toggle($("camera"), off);
    $("camera").textContent = t(off ? "Camera on" : "Camera off");
  };
  function replaceVideo(track) {
    for (const { pc } of peers.values()) {
      for (const sender of pc.getSenders()) {
        if (sender.track && sender.track.kind === "video") sender.replaceTrack(track);
      }
    }
  }
  $("share").onclick = async () => {
    if (screenTrack) { stopShare(); return; }
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true });
    screenTrack = display.getVideoTracks()[0];
    screenTrack.onended = stopShare;
    replaceVideo(screenTrack); // no renegotiation: the same sender carries the screen
    toggle($("share"), true);
    $("share").textContent = t("Stop sharing");
  };
  function stopShare() {
    if (!screenTrack) return;
    screenTrack.stop();
    screenTrack = null;
    if (localStream) replaceVideo(localStream.getVideoTracks()[0]);
    toggle($("share"), false);
    $("share").textContent = t("Share screen");
  }
  $("leave").onclick = () => { finished = true; send({ type: "leave" }); closeAll(); say("You left the visit."); };
  $("end").onclick = () => { finished = true; send({ type: "end" }); };
  $("chat-form").onsubmit = (event) => {
    event.preventDefault();
    const text = $("chat-text").value.trim();
    if (text) send({ type: "chat", text });
    $("chat-text").value = "";
  };
  function addChat(name, text) {
    const item = document.createElement("li");
    item.textContent = `${name}: ${text}`;
    $("chat-log").append(item);
  }

  // --- connection quality from getStats -----------------------------------------------------
  async function measure() {
    for (const [id, entry] of peers) {
      const report = await entry.pc.getStats();
      let frames = 0, lost = 0, received = 0, rtt = null;
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") { frames += s.framesDecoded || 0; }
        if (s.type === "inbound-rtp") { lost += s.packetsLost || 0; received += s.packetsReceived || 0; }
        if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
      });
      const lossRate = received + lost > 0 ? lost / (received + lost) : 0;
      const quality = rtt === null ? "…" : (lossRate > 0.05 || rtt > 0.4 ? "poor" : (lossRate > 0.01 || rtt > 0.2 ? "fair" : "good"));
      stats[id] = { framesDecoded: frames, rtt, lost, quality };
      entry.quality.textContent = t(quality);
      entry.quality.className = `quality ${quality}`;
    }
  }
  setInterval(() => { measure().catch(() => {}); }, 1000);
  setInterval(() => send({ type: "ping", t: Date.now() }), 15000);
  connect();
})();
