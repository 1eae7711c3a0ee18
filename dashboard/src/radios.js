// A row of buttons that behaves as one ARIA radio group: one tab stop (the
// chosen button), arrow keys move the choice (left/up back, right/down on,
// wrapping), Home and End jump to the ends, Space and Enter choose the
// focused button; screen readers hear "radio, 2 of 5, checked".

/** RadioGroup wires the buttons of el that carry data-<key>. */
export class RadioGroup {
  /**
   * on(el, type, fn) adds a listener the caller removes later; choose(value)
   * runs when the user picks another value (by mouse or keyboard).
   */
  constructor(el, key, on, choose) {
    this.el = el;
    this.key = key;
    this.choose = choose;
    this.value = null;
    el.setAttribute("role", "radiogroup");
    for (const b of this.buttons()) {
      b.type = "button";
      b.setAttribute("role", "radio");
    }
    on(el, "click", (e) => {
      const b = e.target.closest("button");
      if (b && el.contains(b)) this.pick(b, false);
    });
    on(el, "keydown", (e) => this.onKey(e));
  }

  buttons() {
    return [...this.el.querySelectorAll(`button[data-${this.key}]`)];
  }

  /** set shows value as chosen without telling anyone. */
  set(value) {
    this.value = value;
    for (const b of this.buttons()) {
      const on = b.dataset[this.key] === value;
      b.setAttribute("aria-checked", String(on));
      b.tabIndex = on ? 0 : -1;
      b.classList.toggle("on", on);
    }
  }

  pick(b, focus) {
    if (focus) b.focus();
    const v = b.dataset[this.key];
    if (v !== this.value) {
      this.set(v);
      this.choose(v);
    }
  }

  onKey(e) {
    const bs = this.buttons();
    const i = bs.indexOf(document.activeElement);
    if (i < 0) return;
    let j;
    switch (e.key) {
      case "ArrowRight": case "ArrowDown": j = (i + 1) % bs.length; break;
      case "ArrowLeft": case "ArrowUp": j = (i - 1 + bs.length) % bs.length; break;
      case "Home": j = 0; break;
      case "End": j = bs.length - 1; break;
      case " ": case "Enter": j = i; break;
      default: return;
    }
    e.preventDefault();
    this.pick(bs[j], true);
  }
}
