// The demo's player page (written by transcoder/ops/page.py): plain browser JavaScript, no build
// step, nothing fetched from the network. One <section class="video"> per job; its data-* attributes
// name the HLS master playlist, the thumbnails' WebVTT and the MP4s, as paths relative to the page.
//
// Playback: hls.js when the browser has Media Source Extensions (Chrome, Firefox, Edge), else the
// browser's native HLS (Safari, iOS), else the top MP4. Each player's state is kept in
// window.transcoderPlayers (what tests/e2e/test_player.py reads, and handy in the dev tools).
"use strict";

(function () {
  const players = [];
  window.transcoderPlayers = players;

  // "00:01:02.500" or "01:02.500" -> seconds
  function seconds(stamp) {
    return stamp.split(":").reduce((total, part) => total * 60 + Number(part), 0);
  }

  // The cues of a thumbnails VTT: each payload is "sprite.jpg#xywh=X,Y,W,H", relative to the VTT.
  function parseVtt(body, vttUrl) {
    const lines = body.replace(/\r\n?/g, "\n").split("\n");
    if (!/^WEBVTT/.test(lines[0].replace(/^\uFEFF/, ""))) {
      throw new Error("not a WebVTT file");
    }
    const cues = [];
    for (let i = 0; i < lines.length; i++) {
      const timing = lines[i].match(/^\s*([\d:.]+)\s+-->\s+([\d:.]+)/);
      if (!timing) continue;
      const payload = (lines[i + 1] || "").trim();
      const match = payload.match(/^(.*)#xywh=(\d+),(\d+),(\d+),(\d+)$/);
      if (!match) continue;
      const [x, y, w, h] = match.slice(2).map(Number);
      const url = new URL(match[1], vttUrl).href;
      cues.push({ start: seconds(timing[1]), end: seconds(timing[2]), url, x, y, w, h });
    }
    return cues;
  }

  function cueAt(cues, time) {
    return cues.find((cue) => time >= cue.start && time < cue.end) || cues[cues.length - 1];
  }

  function clock(time) {
    const s = Math.max(0, Math.floor(time));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  function fail(player, error) {
    player.errors.push(error);
    const box = player.root.querySelector(".errors");
    box.hidden = false;
    box.textContent = player.errors.map((e) => `${e.type}: ${e.details}`).join("; ");
  }

  // The scrubbing preview: the bar under the video shows the tile for the time under the pointer
  // (and for the seek target while the video seeks); a click seeks there.
  async function setUpThumbnails(player) {
    const { root, video } = player;
    const vtt = root.dataset.vtt;
    const bar = root.querySelector(".scrub");
    const preview = bar.querySelector(".preview");
    const state = { cues: [], sprite: null, spriteLoaded: false, shown: null };
    player.thumbnails = state;
    const durationOf = () => video.duration || (state.cues.length ? state.cues[state.cues.length - 1].end : 0);
    const show = (time, left) => {
      const cue = state.cues.length ? cueAt(state.cues, time) : null;
      preview.hidden = false;
      preview.querySelector(".time").textContent = clock(time);
      if (cue) {
        preview.style.width = `${cue.w}px`;
        preview.style.height = `${cue.h}px`;
        preview.style.backgroundImage = `url("${cue.url}")`;
        preview.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
        state.shown = cue;
      }
      const half = preview.offsetWidth / 2;
      preview.style.left = `${Math.min(Math.max(left - half, 0), bar.clientWidth - 2 * half)}px`;
    };
    const timeAt = (event) => {
      const box = bar.getBoundingClientRect();
      return Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1) * durationOf();
    };
    bar.addEventListener("pointermove", (event) => show(timeAt(event), event.clientX - bar.getBoundingClientRect().left));
    bar.addEventListener("pointerleave", () => { preview.hidden = true; });
    bar.addEventListener("click", (event) => { video.currentTime = timeAt(event); });
    video.addEventListener("seeking", () => {
      if (bar.matches(":hover")) return;
      show(video.currentTime, (video.currentTime / (durationOf() || 1)) * bar.clientWidth);
      clearTimeout(state.hide);
      state.hide = setTimeout(() => { preview.hidden = true; }, 1200);
    });
    video.addEventListener("timeupdate", () => {
      bar.querySelector(".played").style.width = `${(100 * video.currentTime) / (durationOf() || 1)}%`;
    });
    if (!vtt) return;
    try {
      const url = new URL(vtt, document.baseURI).href;
      const response = await fetch(url);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      state.cues = parseVtt(await response.text(), url);
      if (!state.cues.length) throw new Error("no cue");
      state.sprite = new Image();
      state.sprite.addEventListener("load", () => { state.spriteLoaded = true; });
      state.sprite.addEventListener("error", () => fail(player, { type: "thumbnails", details: "sprite did not load", fatal: false }));
      state.sprite.src = state.cues[0].url;
    } catch (error) {
      fail(player, { type: "thumbnails", details: `${vtt}: ${error.message}`, fatal: false });
    }
  }

  function showResolution(player) {
    const { video, root } = player;
    const level = player.hls && player.hls.currentLevel >= 0 ? player.hls.levels[player.hls.currentLevel] : null;
    const how = player.hls ? (player.hls.autoLevelEnabled ? "auto" : "forced") : player.mode;
    const name = level ? ` ${level.height}p` : "";
    root.querySelector(".now").textContent = video.videoWidth
      ? `picture ${video.videoWidth}x${video.videoHeight}${name} (${how})`
      : "no picture yet";
  }

  function addOption(select, value, label) {
    const option = document.createElement("option");
    option.value = String(value);
    option.textContent = label;
    select.append(option);
  }

  function withHlsJs(player, master) {
    const { video, root } = player;
    const select = root.querySelector(".rendition");
    const hls = new Hls({ enableWorker: true, capLevelToPlayerSize: false });
    player.hls = hls;
    player.mode = "hls.js";
    hls.on(Hls.Events.MANIFEST_PARSED, (_event, data) => {
      data.levels.forEach((level, index) => {
        addOption(select, index, `${level.height}p (${level.width}x${level.height}, ${Math.round(level.bitrate / 1000)} kb/s)`);
      });
      player.levels = data.levels.map((l) => ({ width: l.width, height: l.height, bitrate: l.bitrate }));
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, () => showResolution(player));
    hls.on(Hls.Events.ERROR, (_event, data) => {
      const error = { type: data.type, details: data.details, fatal: data.fatal };
      if (!data.fatal) {
        player.warnings.push(error);
        return;
      }
      fail(player, error);
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    });
    // currentLevel switches now (flushing what is buffered); -1 is automatic selection again.
    select.addEventListener("change", () => { hls.currentLevel = Number(select.value); showResolution(player); });
    hls.loadSource(master);
    hls.attachMedia(video);
  }

  function withMp4s(player, mp4s, mode) {
    const { video, root } = player;
    const select = root.querySelector(".rendition");
    player.mode = mode;
    if (mode === "native HLS") {
      select.disabled = true;
      select.title = "the browser's own HLS picks the rendition";
      return;
    }
    // No HLS: the picker switches between the MP4s, keeping the position.
    select.innerHTML = "";
    mp4s.forEach(([name, path], index) => addOption(select, index, name));
    select.value = String(mp4s.length - 1);
    select.addEventListener("change", () => {
      const at = video.currentTime;
      const paused = video.paused;
      video.src = mp4s[Number(select.value)][1];
      video.addEventListener("loadedmetadata", () => {
        video.currentTime = at;
        if (!paused) video.play();
      }, { once: true });
    });
    if (mp4s.length) video.src = mp4s[mp4s.length - 1][1];
  }

  function setUp(root) {
    const video = root.querySelector("video");
    const player = { root, video, hls: null, mode: "", levels: [], errors: [], warnings: [], thumbnails: null };
    players.push(player);
    const master = root.dataset.master;
    const mp4s = (root.dataset.mp4s || "").split(",").filter(Boolean).map((pair) => pair.split("="));
    video.addEventListener("resize", () => showResolution(player));
    video.addEventListener("error", () => {
      const error = video.error;
      fail(player, { type: "video", details: error ? `code ${error.code} ${error.message}` : "unknown", fatal: true });
    });
    if (master && window.Hls && Hls.isSupported()) {
      withHlsJs(player, master);
    } else if (master && video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = master;
      withMp4s(player, mp4s, "native HLS");
    } else {
      withMp4s(player, mp4s, "MP4");
    }
    root.querySelector(".mode").textContent = `via ${player.mode}`;
    setUpThumbnails(player);
  }

  document.querySelectorAll("section.video").forEach(setUp);
})();
