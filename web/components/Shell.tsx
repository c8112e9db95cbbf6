"use client";

import Link from "next/link";
import { usePathname, useRouter } from "next/navigation";
import { useEffect, type ReactNode } from "react";
import { useSession } from "@/lib/session";

/** The header (navigation, language switch, log out) and the page frame; `auth` pages send a visitor without
 * a session to the login page. */
export function Shell({ children, auth = true }: { children: ReactNode; auth?: boolean }) {
  const { ready, claims, logout, lang, setLang, t } = useSession();
  const router = useRouter();
  const path = usePathname();

  useEffect(() => {
    if (auth && ready && !claims) router.replace("/login/");
  }, [auth, ready, claims, router]);

  const links: [string, string][] = claims
    ? [
        ["/dashboard/", t("nav_dashboard")],
        ["/keys/", t("nav_keys")],
        ["/settings/", t("nav_settings")],
        ...(claims.role === "operator" ? ([["/ops/", t("nav_ops")]] as [string, string][]) : []),
      ]
    : [
        ["/login/", t("login")],
        ["/signup/", t("signup")],
      ];

  return (
    <>
      <a href="#main" className="sr-only focus:not-sr-only focus:absolute focus:p-2 focus:bg-white">
        {t("skip")}
      </a>
      <header className="border-b border-slate-200 bg-white">
        <nav
          aria-label="main"
          className="mx-auto flex max-w-6xl flex-wrap items-center gap-x-4 gap-y-2 px-4 py-3"
        >
          <Link href={claims ? "/dashboard/" : "/login/"} className="font-bold text-blue-800">
            {t("appName")}
          </Link>
          <ul className="flex flex-wrap gap-x-4 gap-y-1 text-sm">
            {links.map(([href, label]) => (
              <li key={href}>
                <Link
                  href={href}
                  aria-current={path === href ? "page" : undefined}
                  className={
                    path === href ? "font-semibold text-blue-800 underline" : "text-slate-700 hover:underline"
                  }
                >
                  {label}
                </Link>
              </li>
            ))}
          </ul>
          <div className="ml-auto flex items-center gap-2 text-sm">
            <button
              type="button"
              lang={lang === "ko" ? "en" : "ko"}
              onClick={() => setLang(lang === "ko" ? "en" : "ko")}
              className="rounded border border-slate-300 px-2 py-1 hover:bg-slate-100"
            >
              {t("language")}
            </button>
            {claims && (
              <button
                type="button"
                onClick={() => {
                  logout();
                  router.replace("/login/");
                }}
                className="rounded border border-slate-300 px-2 py-1 hover:bg-slate-100"
              >
                {t("logout")}
              </button>
            )}
          </div>
        </nav>
      </header>
      <main id="main" className="mx-auto max-w-6xl px-4 py-6">
        {auth && !claims ? <p>{t("loading")}</p> : children}
      </main>
    </>
  );
}

export function Field({
  id,
  label,
  hint,
  ...input
}: { id: string; label: string; hint?: string } & React.InputHTMLAttributes<HTMLInputElement>) {
  return (
    <div className="flex flex-col gap-1">
      <label htmlFor={id} className="text-sm font-medium text-slate-800">
        {label}
      </label>
      <input
        id={id}
        name={id}
        aria-describedby={hint ? `${id}-hint` : undefined}
        className="rounded border border-slate-400 px-3 py-2 focus:outline-2 focus:outline-blue-700"
        {...input}
      />
      {hint && (
        <p id={`${id}-hint`} className="text-xs text-slate-600">
          {hint}
        </p>
      )}
    </div>
  );
}

/** The operator pages' own navigation (below the header). */
export function OpsNav() {
  const { t } = useSession();
  const path = usePathname();
  const links: [string, string][] = [
    ["/ops/", t("opsNavDay")],
    ["/ops/users/", t("opsNavUsers")],
    ["/ops/system/", t("opsNavSystem")],
  ];
  return (
    <nav aria-label={t("nav_ops")} className="mb-4">
      <ul className="flex flex-wrap gap-2 text-sm">
        {links.map(([href, label]) => (
          <li key={href}>
            <Link
              href={href}
              aria-current={path === href ? "page" : undefined}
              className={
                path === href
                  ? "inline-block rounded bg-blue-800 px-3 py-1 text-white"
                  : "inline-block rounded border border-slate-300 bg-white px-3 py-1 text-slate-800 hover:bg-slate-100"
              }
            >
              {label}
            </Link>
          </li>
        ))}
      </ul>
    </nav>
  );
}

export const button =
  "rounded bg-blue-700 px-4 py-2 font-medium text-white hover:bg-blue-800 disabled:opacity-60 focus:outline-2 focus:outline-offset-2 focus:outline-blue-700";

export function Alert({ kind, children }: { kind: "error" | "ok"; children: ReactNode }) {
  return (
    <p
      role={kind === "error" ? "alert" : "status"}
      className={
        kind === "error"
          ? "rounded border border-red-300 bg-red-50 px-3 py-2 text-red-800"
          : "rounded border border-green-300 bg-green-50 px-3 py-2 text-green-900"
      }
    >
      {children}
    </p>
  );
}
