# Woorden van de pagina's die mensen in hun browser zien.

page-health-ok = De dienst draait.
page-close = U kunt dit venster sluiten.
page-back = Terug naar { $integration }
page-integration-unnamed = de applicatie
page-what-went-wrong = Wat er misging
page-what-to-do = Wat u kunt doen
page-try-again = Opnieuw proberen

## De startpagina (GET /)

home-title = Koppelingsbeheer
home-lead = Deze dienst koppelt Twinfield, Exact Online en Acumatica aan de software die met uw boekhouding werkt.
home-how = Open de link die u per e-mail of in de applicatie hebt gekregen om te koppelen of opnieuw te koppelen.

## De koppelingspagina: wat een koppellink eerst laat zien

connection-title = Koppeling met { $provider }
connection-state-connected = Gekoppeld
connection-state-reconnect = Opnieuw koppelen
connection-state-not-connected = Niet gekoppeld
connection-heading-connected = { $provider } is gekoppeld
connection-heading-reconnect = { $provider } moet opnieuw worden gekoppeld
connection-heading-not-connected = { $provider } is niet gekoppeld
connection-lead-connected = U hoeft niets te doen: { $integration } kan { $provider } gebruiken en houdt de toegang zelf actueel.
connection-lead-reconnect = { $integration } kan { $provider } pas weer gebruiken als iemand met toegang opnieuw inlogt en toestemming geeft.
connection-lead-not-connected = Koppel { $provider } zodat { $integration } met uw boekhouding kan werken. U logt in bij { $provider } en geeft toestemming; uw wachtwoord wordt nooit gedeeld.
connection-why = Waarom
connection-since = Sinds { $moment }
connection-details = Gegevens van de koppeling
connection-row-name = Koppeling
connection-row-integration = Applicatie
connection-row-bound = Gekoppeld aan
connection-row-authorized-by = Toestemming gegeven door
connection-row-authorized-at = Toestemming gegeven op
connection-button-connect = { $provider } koppelen
connection-button-reconnect = { $provider } opnieuw koppelen
connection-button-again = Opnieuw toestemming geven
connection-button-hint = U gaat naar { $provider } om in te loggen en toestemming te geven.
connection-again-hint = Alleen nodig als de support van de applicatie daarom vraagt.
connection-link-spent = Deze link is al gebruikt
connection-link-spent-text = De pagina laat zien hoe de koppeling er nu voor staat, maar met deze link kunt u niet opnieuw koppelen. Werkt er iets niet, gebruik dan de meest recente link die u hebt ontvangen of vraag de applicatie om een nieuwe.
connection-link-replaced = Deze link is vervangen
connection-link-replaced-text = Een nieuwere link heeft deze vervangen. Gebruik de meest recente link die u hebt ontvangen: de nieuwste e-mail, of de link die de applicatie nu toont.

# Waarom een koppeling een mens nodig heeft (één per reden).
reconnect-why-grant_revoked = { $provider } accepteert de toestemming niet meer: die is ingetrokken of vervangen.
reconnect-why-refresh_token_expired = De toestemming bij { $provider } is verlopen.
reconnect-why-refresh_token_reused = { $provider } meldt dat de toestemming twee keer is gebruikt; daarom werkt ze niet meer.
reconnect-why-refresh_interrupted = Het vernieuwen van de toegang werd onderbroken en kon niet worden afgerond.
reconnect-why-legacy_credentials_retired = { $provider } ondersteunt de oude manier van koppelen niet meer en vraagt nu om de nieuwe, veiligere koppeling.
reconnect-why-repeated_failures = Het vernieuwen van de toegang mislukt al te lang.
reconnect-why-client_misconfigured = { $provider } weigert de app-registratie van de applicatie. Neem eerst contact op met de support van de applicatie: opnieuw koppelen helpt pas als zij dit hebben opgelost.
reconnect-why-refresh_failing = Het vernieuwen van de toegang mislukt op dit moment. De dienst blijft het proberen; opnieuw koppelen kan het sneller oplossen.
reconnect-why-disabled = { $provider } heeft de organisatie of gebruiker geblokkeerd of uitgeschakeld. Los dit op met { $provider } en koppel daarna opnieuw.
reconnect-why-legacy_credentials = De koppeling gebruikt nog de oude manier van koppelen met { $provider }, die verdwijnt. Koppel opnieuw om over te stappen op de nieuwe, veiligere koppeling.

# Waaraan een koppeling bij de aanbieder vastzit.
bound-twinfield = administratie { $code }
bound-exact = divisie { $division }
bound-exact-named = divisie { $division } ({ $name })
bound-acumatica = tenant { $tenant }
bound-generic = account { $account }
bound-generic-unnamed = het account dat toestemming gaf

## Nadat de aanbieder de browser terugstuurde

success-heading-connected = { $provider } is gekoppeld
success-heading-reconnected = { $provider } is opnieuw gekoppeld
success-next = Hoe nu verder: { $integration } kan { $provider } nu gebruiken, en de toegang wordt vanzelf actueel gehouden (volgende controle { $moment }). Als { $provider } ooit opnieuw uw toestemming nodig heeft, krijgen de mensen die bij de koppeling staan een e-mail met een link.
division-offer = Deze toestemming geeft toegang tot { $count } divisies. De koppeling werkt nu in divisie { $bound }; kies de divisie waarin ze moet werken:
division-button = Deze divisie gebruiken
division-chosen-title = Exact Online-divisie gekozen
division-chosen-text = De koppeling werkt in { $bound }.

## Waarom een poging stopte (één per reden), en wat u kunt doen

failure-title = { $provider } koppelen is niet gelukt
failure-title-unnamed = Koppelen is niet gelukt
failure-malformed_request = Het verzoek is niet volledig of niet juist
failure-link_unknown = Deze link is niet geldig (misschien is hij verkeerd overgenomen of vervangen door een nieuwere)
failure-link_expired = Deze link is verlopen
failure-link_spent = Deze link is al gebruikt
failure-link_replaced = Een nieuwere link heeft deze vervangen
failure-state_unknown = Deze inlogpoging is onbekend of al gebruikt
failure-state_expired = Deze inlogpoging duurde langer dan { $minutes } minuten en is verlopen
failure-wrong_browser = Deze inlogpoging is in een andere browser begonnen
failure-denied = Er is geen toestemming gegeven bij { $provider }{ $description }
failure-provider_refused = { $provider } weigerde de toestemming ({ $error }){ $description }
failure-provider_error = { $provider } gaf een onverwacht antwoord: { $detail }
failure-nonce_unverified = { $provider } stuurde geen id_token, dus de aanmelding kon niet worden gecontroleerd
failure-identity_mismatch = { $provider } kreeg toestemming van { $actual }, maar deze koppeling moet toestemming krijgen van { $required }
failure-organisation_mismatch = Bij { $provider } is toestemming gegeven voor { $actual }, maar deze koppeling hoort bij { $expected }
failure-other_user = { $provider } kreeg toestemming van { $actual }, maar deze koppeling kreeg eerder toestemming van { $expected }
failure-division_not_granted = Deze toestemming geeft geen toegang tot Exact Online-divisie { $division }, waarin deze koppeling werkt (ze geeft toegang tot { $granted })
failure-divisions_unknown = Exact Online gaf niet aan tot welke divisies deze toestemming toegang geeft (divisie { $division }, die open staat in Exact Online, hoort er niet bij)
failure-division_choice_unknown = Deze keuze van divisie is onbekend of al gemaakt
failure-division_choice_closed = De tijd om een divisie te kiezen is voorbij; de koppeling werkt in Exact Online-divisie { $division }
failure-connection_gone = Deze koppeling is verbroken en kan niet meer worden gekoppeld
failure-conflict = De koppeling veranderde terwijl er toestemming voor werd gegeven
failure-misconfigured = De app-registratie van de applicatie is niet compleet
failure-unavailable = De opslag van de dienst is niet bereikbaar
failure-granted-none = geen enkele divisie
failure-granted = { $count ->
    [one] divisie { $codes }
   *[other] divisies { $codes }
}

todo-start-again-here = Open de koppellink die u hebt gekregen opnieuw, in de browser waarin u het afrondt.
todo-newest-link = Gebruik de meest recente link die u hebt ontvangen (de nieuwste e-mail), of vraag de applicatie om een nieuwe.
todo-new-link = Vraag om een nieuwe koppellink: de applicatie kan er een aanmaken, en herinneringen bevatten er een.
todo-state_expired = Begin opnieuw vanaf de koppellink.
todo-denied = Er is niets gewijzigd. Om te koppelen begint u opnieuw en kiest u bij { $provider } voor toestemming geven.
todo-app-registration = Er is niets gewijzigd. Neem contact op met de support van de applicatie: de app-registratie moet worden hersteld.
todo-retry-later = Er is niets gewijzigd. Probeer het over een paar minuten opnieuw; blijft het mislukken, neem dan contact op met de support van de applicatie.
todo-identity_mismatch = Er is niets gewijzigd. Log uit bij { $provider }, begin opnieuw en log in als de aangewezen koppelingsgebruiker, { $required }.
todo-organisation_mismatch = Er is niets gewijzigd. Begin opnieuw en kies { $expected } bij { $provider }. Wilt u de koppeling naar een andere organisatie verplaatsen, maak dan een nieuwe koppeling.
todo-other_user = Er is niets gewijzigd. Log uit bij { $provider }, begin opnieuw en log in als { $expected }. Wilt u koppelen met de toegang van een andere gebruiker, maak dan een nieuwe koppeling.
todo-division_not_granted = Er is niets gewijzigd. Begin opnieuw en neem op de toestemmingspagina van Exact Online divisie { $division } op bij de divisies waartoe u toegang geeft (of voeg die in Exact Online toe onder App-rechten, Divisies beheren). Wilt u in andere divisies werken, maak dan een nieuwe koppeling.
todo-divisions_unknown = Er is niets gewijzigd. Open in Exact Online een van de divisies waartoe u deze app toegang geeft, en begin daarna opnieuw vanaf de koppellink.
todo-division_choice_unknown = Dit verzoek heeft niets gewijzigd. De koppeling werkt in de divisie die als eerste is gekozen (de applicatie kan die zien); wilt u in een andere werken, vraag de applicatie dan om een nieuwe koppeling die die divisie noemt.
todo-division_choice_closed = Er is niets gewijzigd. Wilt u in een andere divisie werken, vraag de applicatie dan om een nieuwe koppeling die die divisie noemt.
todo-connection_gone = Maak in de applicatie een nieuwe koppeling aan.
todo-try-in-a-minute = Er is niets gewijzigd. Probeer het over een minuut opnieuw.
todo-misconfigured = Neem contact op met de support van de applicatie: de app-registratie moet worden hersteld.

# The settings a connection asks its customer for before authorizing (Acumatica instances).
settings-heading = Geef eerst aan waar uw Acumatica staat
settings-intro = Elk bedrijf heeft een eigen Acumatica. Vul in waar die van u staat; dat wordt gecontroleerd voordat u verdergaat. Dit wordt één keer gevraagd: wilt u later van tenant wisselen, neem dan contact op met de support van de applicatie.
settings-instance-url = Instance-URL
settings-instance-url-hint = Het adres waar u inlogt bij Acumatica, bijvoorbeeld acme.acumatica.com.
settings-tenant = Tenant-ID
settings-tenant-hint = De naam van de tenant (het bedrijf) die u kiest als u inlogt bij Acumatica.
settings-recipients = E-mailadressen voor meldingen
settings-recipients-hint = Wie bericht krijgt als de koppeling aandacht nodig heeft, bijvoorbeeld als er opnieuw toestemming moet worden gegeven. Scheid meerdere adressen met komma's.
settings-time-zone = Tijdzone
settings-time-zone-hint = De tijdzone waarin datums en tijden worden getoond, bijvoorbeeld Europe/Amsterdam. Controleer of dit de uwe is.
settings-submit = Opslaan en verder
settings-sign-in-heading = Log in als de integratiegebruiker
settings-sign-in = Log bij het koppelen in bij Acumatica met de integratiegebruiker die uw bedrijf voor deze koppeling heeft aangemaakt, niet met uw eigen account. Logt iemand anders in, dan heeft de koppeling niet de rechten die ze nodig heeft.
settings-sliding-heading = Geen maandelijkse nieuwe toestemming (Acumatica 2024 R1 of nieuwer)
settings-sliding-intro = Vóór 2024 R1 vraagt Acumatica elke 30 dagen om nieuwe toestemming. Vanaf 2024 R1 kan een beheerder dat uitzetten:
settings-sliding-step-1 = Open in Acumatica het scherm Connected Applications.
settings-sliding-step-2 = Kies de connected application van deze koppeling (de Client ID).
settings-sliding-step-3 = Zet onder Refresh Tokens de Mode op Sliding Expiration.
settings-sliding-step-4 = Zet Sliding Lifetime op 15 dagen, vink Infinite aan en sla op.
settings-refused-instance-url = Deze instance-URL kan de koppeling niet gebruiken. Typ het https-adres waar u inlogt bij Acumatica, bijvoorbeeld acme.acumatica.com.
settings-refused-instance-silent = Op deze instance-URL antwoordt geen Acumatica. Controleer het adres waar u inlogt bij Acumatica en probeer het opnieuw.
settings-refused-tenant = Vul de tenant-ID in: de naam van de tenant (het bedrijf) die u kiest als u inlogt bij Acumatica.
settings-refused-recipients = Vul minstens één geldig e-mailadres in, bijvoorbeeld financien@example.nl.
settings-refused-time-zone = Deze tijdzone kennen we niet. Gebruik een naam als Europe/Amsterdam of America/New_York.
