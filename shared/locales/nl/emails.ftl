# Woorden van de e-mails aan de mensen die bij een koppeling staan vermeld.
# Argumenten: $provider (Exact Online), $tenant (wie de integratie levert), $connection (de koppeling
# zoals mensen haar kennen), $since, $deadline en $until (momenten, met hun tijdzone), $days (een aantal).

## Onderwerpregels

email-subject-reconnect = Actie nodig: koppel { $provider } opnieuw voor { $tenant }
email-subject-disabled = Actie nodig: { $provider } heeft de koppeling voor { $tenant } uitgeschakeld
email-subject-recovered = { $provider } werkt weer voor { $tenant }
email-subject-absolute-expiry = Koppeling met { $provider } voor { $tenant } stopt op { $deadline }
email-subject-absolute-expiry-undated = Koppeling met { $provider } voor { $tenant } stopt binnenkort
email-subject-idle-expiry = Koppeling met { $provider } voor { $tenant } mislukt en verloopt binnenkort
email-subject-legacy = Koppeling met { $provider } voor { $tenant } gebruikt verouderde inloggegevens
email-subject-reminder-reconnect = Herinnering: koppel { $provider } opnieuw voor { $tenant }
email-subject-reminder-disabled = Herinnering: { $provider } weigert nog steeds de koppeling voor { $tenant }
email-subject-check = Controleer de koppeling met { $provider } voor { $tenant }

## Het kader van elke e-mail

email-greeting = Goedendag,
email-about = Dit bericht gaat over de koppeling van { $tenant } met { $connection }.
email-what-heading = Wat er aan de hand is
email-todo-heading = Wat u moet doen
email-footer = U ontvangt dit bericht omdat uw e-mailadres bij deze koppeling in { $tenant } staat vermeld.
# Als de gegevens van de leverancier niet te vinden zijn.
email-tenant-unknown = uw integratie

## Wat er aan de hand is

email-what-reconnect = Sinds { $since } heeft { $tenant } geen toegang meer tot { $connection }. { $reason }
email-what-reconnect-reminder = Sinds { $since } ({ $days ->
        [one] 1 dag
       *[other] { $days } dagen
    } geleden) heeft { $tenant } geen toegang meer tot { $connection }. { $reason }
email-what-disabled = Sinds { $since } weigert { $provider } de koppeling met { $connection }: de administratie is daar geblokkeerd, uitgeschakeld of verwijderd.
email-what-disabled-reminder = Sinds { $since } ({ $days ->
        [one] 1 dag
       *[other] { $days } dagen
    } geleden) weigert { $provider } de koppeling met { $connection }: de administratie is daar geblokkeerd, uitgeschakeld of verwijderd.
email-what-recovered = Sinds { $since } werkt de koppeling met { $connection } weer.
email-what-absolute-expiry = { $provider } beëindigt de toestemming voor { $connection } op { $deadline }: die geldt voor een vaste periode en kan niet worden verlengd.
email-what-absolute-expiry-undated = { $provider } beëindigt binnenkort de toestemming voor { $connection }: die geldt voor een vaste periode en kan niet worden verlengd.
email-what-idle-expiry = Het vernieuwen van de toestemming voor { $connection } mislukt steeds. Lukt het niet vóór { $deadline }, dan verloopt de toestemming.
email-what-idle-expiry-undated = Het vernieuwen van de toestemming voor { $connection } mislukt steeds. Blijft dat zo, dan verloopt de toestemming.
email-what-legacy = { $connection } meldt zich nog aan met oude inloggegevens. { $provider } stopt daarmee en stapt over op OAuth 2.0; zodra ze worden geweigerd, stopt de koppeling.
email-what-check = Sinds { $since } vraagt de koppeling met { $connection } om aandacht.

## Waarom iemand opnieuw moet koppelen, naar de reden die de dienst vond

email-reason-grant-revoked = { $provider } accepteert de toestemming voor deze koppeling niet meer: die is ingetrokken of vervangen.
email-reason-refresh-token-expired = De toestemming voor deze koppeling is bij { $provider } verlopen.
email-reason-refresh-token-reused = Volgens { $provider } is de toestemming voor deze koppeling al eerder gebruikt, waardoor die niet meer werkt.
email-reason-refresh-interrupted = Het vernieuwen van de toestemming werd onderbroken en de nieuwe toestemming van { $provider } kon niet worden hersteld.
email-reason-legacy-retired = { $provider } accepteert de oude inloggegevens van deze koppeling niet meer en vereist nu OAuth 2.0.
email-reason-repeated-failures = Het vernieuwen van de toestemming mislukt al te lang.
email-reason-client-misconfigured = { $provider } weigert de app-registratie van de integratie (de client-id of het secret), of de registratie verwijst naar een adres dat de dienst niet gebruikt.

## Wat u moet doen

email-todo-sign-in = Open de link hieronder, log in bij { $provider } en geef opnieuw toestemming voor de koppeling.
email-todo-sign-in-as = Open de link hieronder, log in bij { $provider } als { $person } en geef opnieuw toestemming voor de koppeling.
email-todo-disabled = Los dit eerst op met { $provider }. Open daarna de link hieronder en geef opnieuw toestemming voor de koppeling.
email-todo-client-misconfigured = Vraag de beheerder van de integratie om de app-registratie bij { $provider } te controleren (client-id, secret en adressen). Open daarna de link hieronder en geef opnieuw toestemming voor de koppeling.
email-todo-recovered = U hoeft niets meer te doen.
email-todo-absolute-expiry = Koppel vóór die datum opnieuw, zodat de integratie blijft werken.
email-todo-idle-expiry = Koppel voor de zekerheid nu opnieuw.
email-todo-legacy = Koppel opnieuw om over te stappen op OAuth 2.0.
email-hint-acumatica-sliding = Vanaf Acumatica 2024 R1 kan een beheerder voorkomen dat dit steeds terugkomt: zet in het scherm Connected Applications de refresh tokens van deze toepassing op Sliding Expiration met een onbeperkte looptijd (Infinite).

## De knop

email-action-reconnect = { $provider } opnieuw koppelen
email-action-until = De link werkt tot { $until }. Stuur deze e-mail niet door: iedereen met de link kan de koppeling opnieuw maken.

## Details voor wie het technisch uitzoekt

email-details-heading = Details voor uw IT-contactpersoon
email-details-intro = Wat { $provider } meldde, voor wie dit technisch uitzoekt:
email-details-message = Melding van { $provider }
email-details-connection = Koppeling
email-details-time = Tijdstip

## De koppeling zoals mensen haar kennen: "Exact Online, administratie 123 (Acme B.V.)"

email-provider-generic = OAuth 2.0-aanbieder
email-context-twinfield = organisatie { $code }
email-context-exact = administratie { $division }
email-context-exact-named = administratie { $division } ({ $name })
email-context-acumatica = tenant { $tenant }
email-context-generic = account { $account }
email-context-generic-unnamed = het gemachtigde account
