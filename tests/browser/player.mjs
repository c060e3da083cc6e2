// Drives Debian's headless Chromium over the demo's player page and prints what it saw as one JSON
// object on stdout; tests/e2e/test_player.py asserts on it. Usage: node player.mjs URL USER_DATA_DIR
//
// Chromium runs with the background-networking flags off: this machine's network is closed, and
// without them Chromium's own connections (updates, sync, QUIC probes) are refused noisily.
import { chromium } from "playwright-core";

const [url, userDataDir, ...options] = process.argv.slice(2);
const screenshot = options.includes("--screenshot") ? options[options.indexOf("--screenshot") + 1] : null;
const withoutMse = options.includes("--without-mse");
const STEP_MS = 30_000;
const report = { steps: [], requests: [], failedRequests: [], consoleErrors: [], pageErrors: [] };

function step(name, facts) {
  report.steps.push(name);
  Object.assign(report, facts);
}

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

try {
  const page = context.pages()[0] || (await context.newPage());
  if (withoutMse) {
    await page.addInitScript(() => {
      for (const name of ["MediaSource", "WebKitMediaSource", "ManagedMediaSource"]) {
        Object.defineProperty(window, name, { value: undefined, configurable: true });
      }
    });
  }
  page.on("console", (message) => {
    if (message.type() === "error") report.consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => report.pageErrors.push(String(error)));
  page.on("requestfailed", (request) => report.failedRequests.push(`${request.url()} ${request.failure()?.errorText}`));
  page.on("response", (response) => report.requests.push({ url: response.url(), status: response.status() }));

  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => window.transcoderPlayers && window.transcoderPlayers.length > 0, null, { timeout: STEP_MS });
  step("loaded", await page.evaluate(() => ({
    mode: window.transcoderPlayers[0].mode,
    videos: window.transcoderPlayers.length,
    userAgent: navigator.userAgent,
  })));

  if (report.mode === "hls.js") {
    await page.waitForFunction(() => window.transcoderPlayers[0].levels.length > 0, null, { timeout: STEP_MS });
  }
  // Evidence of what this Chromium decodes, for the variants the master playlist declares.
  step("codecs", await page.evaluate(() => {
    const { hls, video } = window.transcoderPlayers[0];
    const codecs = hls ? hls.levels.map((level) => level.attrs.CODECS) : [];
    return {
      levels: window.transcoderPlayers[0].levels,
      pickerOptions: [...document.querySelectorAll("section.video:first-of-type .rendition option")].map((o) => o.textContent),
      mseSupport: Object.fromEntries(codecs.map((c) => [c, window.MediaSource ? MediaSource.isTypeSupported(`video/mp4; codecs="${c}"`) : false])),
      canPlayH264: video.canPlayType('video/mp4; codecs="avc1.640028"'),
    };
  }));

  // Thumbnails: the VTT parsed, the sprite loaded, and hovering the bar shows the right tile.
  await page.waitForFunction(() => {
    const t = window.transcoderPlayers[0].thumbnails;
    const done = !window.transcoderPlayers[0].root.dataset.vtt || t.spriteLoaded;
    return t && (done || window.transcoderPlayers[0].errors.length > 0);
  }, null, { timeout: STEP_MS });
  const bar = page.locator("section.video").first().locator(".scrub");
  const box = await bar.boundingBox();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2);
  step("thumbnails", await page.evaluate(() => {
    const t = window.transcoderPlayers[0].thumbnails;
    const preview = document.querySelector("section.video .preview");
    return {
      cues: t.cues.length,
      firstCue: t.cues[0],
      lastCue: t.cues[t.cues.length - 1],
      sprite: t.sprite ? { loaded: t.spriteLoaded, width: t.sprite.naturalWidth, height: t.sprite.naturalHeight } : null,
      hover: { visible: !preview.hidden, backgroundImage: preview.style.backgroundImage, cue: t.shown },
    };
  }));
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  await page.mouse.move(0, 0);

  const playable = Object.values(report.mseSupport).some(Boolean);
  if (report.mode !== "hls.js") {
    await page.evaluate(() => {
      const { video } = window.transcoderPlayers[0];
      video.muted = true;
      window.__ended = false;
      video.addEventListener("ended", () => { window.__ended = true; });
      return video.play();
    });
    await page.waitForFunction(() => window.transcoderPlayers[0].video.currentTime > 0.3, null, { timeout: STEP_MS });
    step("started", await page.evaluate(() => {
      const { video, root } = window.transcoderPlayers[0];
      return { startedAt: video.currentTime, src: video.currentSrc, pickerDisabled: root.querySelector(".rendition").disabled, videoWidth: video.videoWidth, videoHeight: video.videoHeight };
    }));
    await page.evaluate(() => { window.transcoderPlayers[0].video.playbackRate = 2; });
    await page.waitForFunction(() => window.__ended, null, { timeout: 60_000 });
    step("ended", await page.evaluate(() => {
      const { video } = window.transcoderPlayers[0];
      return { ended: video.ended, currentTime: video.currentTime, duration: video.duration, decodedFrames: video.getVideoPlaybackQuality().totalVideoFrames };
    }));
  } else if (playable) {
    // Playback starts (muted: Chromium allows muted autoplay without a gesture).
    await page.evaluate(() => {
      const { video } = window.transcoderPlayers[0];
      video.muted = true;
      window.__ended = false;
      video.addEventListener("ended", () => { window.__ended = true; });
      return video.play();
    });
    await page.waitForFunction(() => window.transcoderPlayers[0].video.currentTime > 0.3, null, { timeout: STEP_MS });
    step("started", { startedAt: await page.evaluate(() => window.transcoderPlayers[0].video.currentTime) });

    // Force each rendition through the page's picker; the decoded picture must follow.
    report.switches = [];
    const levels = report.levels;
    // hls.js starts on the first level, so the top one first: each forced level is a real switch.
    for (const index of [levels.length - 1, 0]) {
      await page.locator("section.video").first().locator(".rendition").selectOption(String(index));
      await page.waitForFunction((w) => window.transcoderPlayers[0].video.videoWidth === w, levels[index].width, { timeout: STEP_MS });
      report.switches.push(await page.evaluate((i) => {
        const { video, hls, root } = window.transcoderPlayers[0];
        return { forced: i, videoWidth: video.videoWidth, videoHeight: video.videoHeight, hlsLevel: hls.currentLevel, shown: root.querySelector(".now").textContent, at: video.currentTime };
      }, index));
    }
    step("switched", {});

    // Play through to the end, a little faster than real time.
    await page.evaluate(() => { window.transcoderPlayers[0].video.playbackRate = 2; });
    await page.waitForFunction(() => window.__ended, null, { timeout: 60_000 });
    step("ended", await page.evaluate(() => {
      const { video } = window.transcoderPlayers[0];
      const played = [];
      for (let i = 0; i < video.played.length; i++) played.push([video.played.start(i), video.played.end(i)]);
      return { ended: video.ended, currentTime: video.currentTime, duration: video.duration, played, decodedFrames: video.getVideoPlaybackQuality().totalVideoFrames };
    }));
  }
  step("done", await page.evaluate(() => {
    const player = window.transcoderPlayers[0];
    return { errors: player.errors, warnings: player.warnings, mediaError: player.video.error ? player.video.error.code : null };
  }));
} catch (error) {
  report.failure = String(error && error.stack ? error.stack : error);
} finally {
  await context.close();
}
process.stdout.write(JSON.stringify(report) + "\n");
